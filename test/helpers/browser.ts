import { mkdir } from 'node:fs/promises'
import { chromium, type Browser, type Page } from 'playwright-core'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const ARTIFACTS = new URL('../artifacts/', import.meta.url)

/** Debian's Chromium, headless, with no network of its own (never a browser download). */
export async function launch (): Promise<Browser> {
  try {
    return await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
    })
  } catch (err) {
    throw new Error(`The browser tests need Debian's Chromium at ${CHROMIUM} (apt-get install chromium): ${(err as Error).message}`)
  }
}

/** Saves a screenshot under test/artifacts/ (ignored by git), so a failure can be looked at. */
export async function screenshot (page: Page, name: string): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: new URL(`${name}.png`, ARTIFACTS).pathname })
}
