// The example chat in a real browser behind a proxy that refuses WebSocket upgrades: the page falls back to the
// HTTP stream, two users chat in a room with presence, a dropped stream recovers what it missed, and when the proxy
// lets upgrades through the pages move to WebSockets without losing or repeating a message.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { Browser, Page } from 'playwright-core'
import { buildExample } from '../example/app.js'
import { launch, screenshot } from './helpers/browser.js'
import { HttpProxy } from './helpers/http-proxy.js'

let browser: Browser
before(async () => { browser = await launch() })
after(async () => { await browser.close() })

async function loggedIn (base: string, name: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 650 } })
  const page = await context.newPage()
  // A WebSocket is tried again every second on the stream (30 s by default), so the move back is seen quickly.
  await page.addInitScript(() => { (globalThis as any).chatClientOptions = { probeInterval: 1000 } })
  await page.goto(base)
  await page.fill('#name', name)
  await page.click('#login button')
  await page.waitForSelector('#status.connected', { timeout: 15000 })
  return page
}

async function say (page: Page, text: string): Promise<void> {
  await page.fill('#text', text)
  await page.click('#send button')
}

async function texts (page: Page): Promise<Array<string | null | undefined>> {
  return await page.$$eval('#messages li:not(.notice)', (lis) => lis.map((li) => li.childNodes[1]?.textContent))
}

test('WebSockets blocked by a proxy: the chat runs on the HTTP stream (presence, messages, a recovered drop), then moves to WebSockets when they get through', { timeout: 90000 }, async (t) => {
  let backend = ''
  let upgrades: 'refuse' | 'pass' = 'refuse'
  const proxy = new HttpProxy({ targets: () => [backend], upgrades: () => upgrades })
  const base = await proxy.listen()
  t.after(async () => { await proxy.close() })
  const example = await buildExample({ logger: false, shutdownTimeout: 1000, allowedOrigins: [base] })
  backend = `http://127.0.0.1:${await example.listen(0)}`
  t.after(() => example.app.close())

  const alice = await loggedIn(base, 'alice')
  const bob = await loggedIn(base, 'bob')
  t.after(async () => { await alice.context().close(); await bob.context().close() })
  for (const page of [alice, bob]) {
    assert.equal(await page.getAttribute('#status', 'data-transport'), 'stream')
    assert.equal(await page.textContent('#status'), 'connected (HTTP stream)')
    await page.waitForFunction(() => document.querySelector('#presence')?.textContent === 'alicebob', null, { timeout: 10000 })
  }
  assert.ok(proxy.refusedUpgrades >= 2, `${proxy.refusedUpgrades} upgrades refused`)
  assert.deepEqual([...example.app.realtime.connections.values()].map((conn) => conn.transport), ['stream', 'stream'])

  await say(alice, 'hello bob')
  await bob.waitForSelector('#messages li:has-text("hello bob")', { timeout: 5000 })
  await bob.fill('#text', 'typing on a stream')
  await alice.waitForFunction(() => document.querySelector('#typing')?.textContent === 'bob is typing…', null, { timeout: 5000 })
  await screenshot(alice, 'example-fallback-stream')

  // Alice's stream is cut (a proxy restart, a network change); bob writes meanwhile: she gets it all, once, in order.
  for (const conn of example.app.realtime.byUser('alice')) conn.terminate()
  for (const text of ['one', 'two', 'three']) {
    await say(bob, text)
    await bob.waitForSelector(`#messages li:has-text("${text}")`, { timeout: 5000 })
  }
  await alice.waitForSelector('#messages li:has-text("three")', { timeout: 15000 })
  await alice.waitForSelector('#status.connected', { timeout: 10000 })
  assert.deepEqual(await texts(alice), ['hello bob', 'one', 'two', 'three'])
  assert.equal(await alice.getAttribute('#status', 'data-transport'), 'stream')

  // The proxy lets upgrades through: both pages move to WebSockets within a probe or two, and nothing is lost or
  // repeated while bob keeps writing through the move.
  upgrades = 'pass'
  for (let i = 1; i <= 6; i++) {
    await say(bob, `moving ${i}`)
    await bob.waitForSelector(`#messages li:has-text("moving ${i}")`, { timeout: 5000 })
    await new Promise((resolve) => setTimeout(resolve, 300))
  }
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => (document.querySelector('#status') as HTMLElement | null)?.dataset.transport === 'websocket', null, { timeout: 10000 })
    assert.equal(await page.textContent('#status'), 'connected')
  }
  await say(alice, 'on a websocket')
  await bob.waitForSelector('#messages li:has-text("on a websocket")', { timeout: 5000 })
  await alice.waitForSelector('#messages li:has-text("on a websocket")', { timeout: 5000 })
  const expected = ['hello bob', 'one', 'two', 'three', 'moving 1', 'moving 2', 'moving 3', 'moving 4', 'moving 5', 'moving 6', 'on a websocket']
  assert.deepEqual(await texts(alice), expected)
  assert.deepEqual(await texts(bob), expected)
  for (const page of [alice, bob]) assert.equal(await page.textContent('#presence'), 'alicebob')
  await screenshot(alice, 'example-fallback-websocket')
  // The streams were closed after the move: two connections, both WebSockets; nobody left the room on the way.
  const deadline = Date.now() + 5000
  while (example.app.realtime.connections.size !== 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual([...example.app.realtime.connections.values()].map((conn) => conn.transport), ['websocket', 'websocket'])
  assert.deepEqual([...(await example.app.realtime.presence('lobby').list()).keys()].sort(), ['alice', 'bob'])
})
