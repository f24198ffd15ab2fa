// The example chat in a real browser (the system Chromium, or the one inside @sparticuz/chromium) through playwright-core.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { readFile } from 'node:fs/promises'
import type { Browser, Page } from 'playwright-core'
import { buildExample, type Example } from '../example/app.js'
import { MAX_MESSAGE_LENGTH } from '../example/chat-route.js'
import { launch, screenshot } from './helpers/browser.js'

let browser: Browser
before(async () => { browser = await launch() })
after(async () => { await browser.close() })

async function startExample (port = 0): Promise<{ example: Example, port: number, base: string }> {
  const example = await buildExample({ logger: false, shutdownTimeout: 1000 })
  const actual = await example.listen(port)
  return { example, port: actual, base: `http://127.0.0.1:${actual}` }
}

async function loggedIn (base: string, name: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 650 } })
  const page = await context.newPage()
  await page.goto(base)
  await page.fill('#name', name)
  await page.click('#login button')
  await page.waitForSelector('#status.connected', { timeout: 10000 })
  return page
}

async function say (page: Page, text: string): Promise<void> {
  await page.fill('#text', text)
  await page.click('#send button')
}

test('two users join a room, see each other and exchange messages; a message over the limit shows the server\'s error', { timeout: 60000 }, async (t) => {
  const { example, base } = await startExample()
  t.after(() => example.app.close())
  const alice = await loggedIn(base, 'alice')
  const bob = await loggedIn(base, 'bob')
  t.after(async () => { await alice.context().close(); await bob.context().close() })
  await alice.waitForFunction(() => document.querySelector('#presence')?.textContent === 'alicebob', null, { timeout: 10000 })
  await bob.waitForFunction(() => document.querySelector('#presence')?.textContent === 'alicebob', null, { timeout: 10000 })
  await say(alice, 'hello bob')
  await bob.waitForSelector('#messages li:has-text("hello bob")', { timeout: 5000 })
  await say(bob, 'hi alice')
  await alice.waitForSelector('#messages li:has-text("hi alice")', { timeout: 5000 })
  // Bob's own message comes back to his page through the room too: wait for it there before reading it.
  await bob.waitForSelector('#messages li:has-text("hi alice")', { timeout: 5000 })
  assert.equal(await bob.textContent('#messages li:last-child b'), 'bob')
  await screenshot(alice, 'example-two-users')

  await say(alice, 'x'.repeat(MAX_MESSAGE_LENGTH + 1))
  await alice.waitForSelector('#error:not([hidden])', { timeout: 5000 })
  assert.equal(await alice.textContent('#error'), `VALIDATION_FAILED: Expected string length less or equal to ${MAX_MESSAGE_LENGTH}`)
  await screenshot(alice, 'example-too-long')
  assert.equal(await bob.locator('#messages li').count(), 2, 'the refused message reached nobody')
})

test('who is typing and the member list come from presence: typing shows on the other page and clears; a closed page leaves the list', { timeout: 60000 }, async (t) => {
  const { example, base } = await startExample()
  t.after(() => example.app.close())
  const alice = await loggedIn(base, 'alice')
  const bob = await loggedIn(base, 'bob')
  t.after(async () => { await alice.context().close() })
  await alice.waitForFunction(() => document.querySelector('#presence')?.textContent === 'alicebob', null, { timeout: 10000 })
  await bob.fill('#text', 'typing something')
  await alice.waitForFunction(() => document.querySelector('#typing')?.textContent === 'bob is typing…', null, { timeout: 5000 })
  assert.equal(await bob.textContent('#typing'), '', 'one does not see oneself typing')
  // Two seconds without a keystroke: no longer typing.
  await alice.waitForFunction(() => document.querySelector('#typing')?.textContent === '', null, { timeout: 5000 })
  const list = await example.app.realtime.presence('lobby').list()
  assert.deepEqual([...list.keys()].sort(), ['alice', 'bob'])
  await bob.context().close()
  // After the server's leaveDelay (5 s), bob is gone from alice's list.
  await alice.waitForFunction(() => document.querySelector('#presence')?.textContent === 'alice', null, { timeout: 15000 })
})

test('the server restarts: the page shows reconnecting, then connected, and messages flow again', { timeout: 60000 }, async (t) => {
  const first = await startExample()
  const alice = await loggedIn(first.base, 'alice')
  t.after(async () => { await alice.context().close() })
  await first.example.app.close()
  await alice.waitForSelector('#status.reconnecting', { timeout: 10000 })
  assert.match(await alice.textContent('#status') ?? '', /reconnecting in \d+ s|disconnected/)
  await screenshot(alice, 'example-reconnecting')
  const second = await startExample(first.port)
  t.after(() => second.example.app.close())
  await alice.waitForSelector('#status.connected', { timeout: 40000 })
  const bob = await loggedIn(second.base, 'bob')
  t.after(async () => { await bob.context().close() })
  await alice.waitForFunction(() => document.querySelector('#presence')?.textContent === 'alicebob', null, { timeout: 10000 })
  await say(bob, 'after the restart')
  await alice.waitForSelector('#messages li:has-text("after the restart")', { timeout: 5000 })
  await screenshot(alice, 'example-reconnected')
})

test('a page cut off while the other sends three messages shows them once, in order, after it reconnects; a restarted store shows "history lost, reloaded"', { timeout: 90000 }, async (t) => {
  const first = await startExample()
  const alice = await loggedIn(first.base, 'alice')
  const bob = await loggedIn(first.base, 'bob')
  t.after(async () => { await alice.context().close(); await bob.context().close() })
  await alice.waitForFunction(() => document.querySelector('#presence')?.textContent === 'alicebob', null, { timeout: 10000 })
  // The server drops alice's connection (a network change, a load balancer); bob writes meanwhile.
  for (const conn of first.example.app.realtime.byUser('alice')) conn.terminate()
  for (const text of ['one', 'two', 'three']) {
    await say(bob, text)
    await bob.waitForSelector(`#messages li:has-text("${text}")`, { timeout: 5000 })
  }
  await alice.waitForSelector('#messages li:has-text("three")', { timeout: 15000 })
  await alice.waitForSelector('#status.connected', { timeout: 10000 })
  const texts = await alice.$$eval('#messages li', (lis) => lis.map((li) => li.childNodes[1]?.textContent))
  assert.deepEqual(texts, ['one', 'two', 'three'])
  await screenshot(alice, 'example-recovered')

  // A restart loses the in-memory history: the page says so and reloads the room from the server's snapshot.
  await first.example.app.close()
  const second = await startExample(first.port)
  t.after(() => second.example.app.close())
  await alice.waitForSelector('#messages li.notice:has-text("history lost (epoch), reloaded")', { timeout: 40000 })
  await screenshot(alice, 'example-history-lost')
})

test('a page from another origin cannot connect: the Origin check refuses it before the upgrade', { timeout: 30000 }, async (t) => {
  const { example, base, port } = await startExample()
  t.after(() => example.app.close())
  // A login on the real origin, for a valid token: only the Origin is wrong.
  const { token } = await (await fetch(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"mallory"}' })).json() as { token: string }
  const evil = http.createServer((_req, res) => {
    res.setHeader('content-type', 'text/html')
    res.end(`<script>
      const ws = new WebSocket('ws://127.0.0.1:${port}/chat', ['bearer.${token}', 'realtime.v1'])
      ws.onopen = () => { document.title = 'opened' }
      ws.onclose = (e) => { document.title = 'closed ' + e.code }
    </script>`)
  })
  await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve))
  t.after(() => { evil.close() })
  const page = await browser.newPage()
  t.after(() => page.close())
  await page.goto(`http://127.0.0.1:${(evil.address() as { port: number }).port}/`)
  await page.waitForFunction(() => document.title.startsWith('closed') || document.title === 'opened', null, { timeout: 10000 })
  assert.equal(await page.title(), 'closed 1006')
  assert.equal(example.app.realtime.stats().refused.FORBIDDEN_ORIGIN, 1)
  assert.equal(example.app.realtime.connections.size, 0)
})

test('a page on another origin that the allowlist accepts, with a bad token, goes offline with INVALID_TOKEN after one attempt', { timeout: 30000 }, async (t) => {
  // A single-page app on its own origin, serving the client bundle itself; the chat server allows that origin.
  const bundle = await readFile(new URL('../dist/client/realtime-client.js', import.meta.url))
  const spa = http.createServer((req, res) => {
    if (req.url === '/client.js') {
      res.setHeader('content-type', 'text/javascript')
      res.end(bundle)
      return
    }
    res.setHeader('content-type', 'text/html')
    res.end(`<script type="module">
      import { createClient } from '/client.js'
      let attempts = 0
      const client = createClient('ws://127.0.0.1:${String(chatPort)}/chat', { token: 'not-a-token', maxAttempts: 5, backoff: { base: 50, cap: 100 } })
      client.on('reconnecting', () => { attempts++ })
      client.on('offline', (err) => { document.title = 'offline ' + err.code + ' after ' + attempts + ' retries' })
    </script>`)
  })
  await new Promise<void>((resolve) => spa.listen(0, '127.0.0.1', resolve))
  t.after(() => { spa.close() })
  const spaOrigin = `http://127.0.0.1:${(spa.address() as { port: number }).port}`
  const example = await buildExample({ logger: false, shutdownTimeout: 1000, allowedOrigins: [spaOrigin] })
  const chatPort = await example.listen(0)
  t.after(() => example.app.close())
  const page = await browser.newPage()
  t.after(() => page.close())
  await page.goto(`${spaOrigin}/`)
  await page.waitForFunction(() => document.title.startsWith('offline'), null, { timeout: 10000 })
  assert.equal(await page.title(), 'offline INVALID_TOKEN after 0 retries')
  const stats = example.app.realtime.stats()
  assert.deepEqual([stats.refused, stats.diagnoses], [{ INVALID_TOKEN: 1 }, { INVALID_TOKEN: 1 }])
  assert.equal(stats.connections, 0)
})
