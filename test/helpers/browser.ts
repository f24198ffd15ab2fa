import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { chromium, type Browser, type Page } from 'playwright-core'

export const ARTIFACTS = new URL('../artifacts/', import.meta.url)

const SYSTEM_CHROMIUMS = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome']
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
// Of @sparticuz/chromium's own flags (made for AWS Lambda), some switch off the very checks the tests are about
// (CORS, mixed content, site isolation) and --single-process breaks a second browser context: none are passed.
const PACKAGED_ARGS = ['--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--no-zygote']

/**
 * Which Chromium the browser tests drive: CHROMIUM_PATH, else the system's, else the one that ships inside the
 * @sparticuz/chromium npm package (unpacked to the temp folder on first use). Never a browser download.
 */
export async function chromiumExecutable (): Promise<{ executablePath: string, args: string[], source: string }> {
  const chosen = process.env.CHROMIUM_PATH ?? SYSTEM_CHROMIUMS.find((path) => existsSync(path))
  if (chosen !== undefined) return { executablePath: chosen, args: ARGS, source: chosen }
  const packaged = (await import('@sparticuz/chromium')).default
  return { executablePath: await packaged.executablePath(), args: [...ARGS, ...PACKAGED_ARGS], source: '@sparticuz/chromium' }
}

/** A headless Chromium with no network of its own. */
export async function launch (): Promise<Browser> {
  const { executablePath, args, source } = await chromiumExecutable()
  try {
    return await chromium.launch({ executablePath, args })
  } catch (err) {
    throw new Error(`The browser tests could not start Chromium (${source}): ${(err as Error).message}`)
  }
}

/** Saves a screenshot under test/artifacts/ (ignored by git), so a failure can be looked at. */
export async function screenshot (page: Page, name: string): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: new URL(`${name}.png`, ARTIFACTS).pathname })
}
