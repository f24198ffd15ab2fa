// The docs page of the example in a real browser: it renders the example's message types with no network at all.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { Browser } from 'playwright-core'
import { buildExample } from '../example/app.js'
import { launch, screenshot } from './helpers/browser.js'

let browser: Browser
before(async () => { browser = await launch() })
after(async () => { await browser?.close() })

test('the example\'s /asyncapi page lists its message types, events and handshake, loading nothing but itself', { timeout: 60000 }, async (t) => {
  const example = await buildExample({ logger: false })
  const port = await example.listen(0)
  t.after(() => example.app.close())
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } })
  t.after(() => page.close())
  const requests: string[] = []
  const errors: string[] = []
  page.on('request', (request) => { requests.push(request.url()) })
  page.on('pageerror', (err) => { errors.push(err.message) })

  const url = `http://127.0.0.1:${port}/asyncapi`
  await page.goto(url)
  await page.waitForSelector('section.message[data-type="room.join"]', { timeout: 10000 })
  const shown = await page.locator('section.message[data-type]').evaluateAll((sections) =>
    sections.map((s) => `${s.getAttribute('data-direction') ?? ''} ${s.getAttribute('data-type') ?? ''}`))
  assert.deepEqual(shown, [
    'receive room.join', 'receive room.leave', 'receive chat.send', 'receive typing', 'receive ping', 'receive auth.refresh',
    // The example has history and presence: the page shows how a client recovers and follows the member list.
    'receive rt.resume', 'send rt.position', 'send rt.presence', 'send rt.presence.diff', 'send rt.presence.left',
    'send chat.message', 'send error'
  ])
  // A message shows its data schema and its reply's.
  const join = page.locator('section.message[data-type="room.join"]')
  assert.match(await join.innerText(), /room\*?:\s*string minLength: 1 maxLength: 32 pattern: \^\[\\w-\]\+\$/)
  assert.match(await join.innerText(), /users\*?:\s*array — who is in the room/)
  await page.click('summary')
  assert.match(await page.locator('details').innerText(), /403\s+FORBIDDEN_ORIGIN/)
  assert.match(await page.locator('#errors').innerText(), /VALIDATION_FAILED/)
  await screenshot(page, 'asyncapi-page')
  assert.deepEqual(requests, [url], 'no request but the page itself')
  assert.deepEqual(errors, [])
})
