// The typed client (lib/client): requests, events, the queue, close(). Reconnects are in client-reconnect.test.ts,
// handshakes and tokens in client-handshake.test.ts. Every test runs against the real plugin.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFile } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import WebSocket from 'ws'
import { CloseCode as ServerCloseCode } from '../lib/index.js'
import { CloseCode, RealtimeClientError } from '../lib/client/index.js'
import { waitFor } from './helpers/client.js'
import { nextEvent, opened, serveChat, sleep, typedClient, type ChatRoute } from './helpers/typed-client.js'

test('a typed request gets its reply (null when the handler returns nothing); events reach their listeners until off()', { timeout: 10000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  const c = typedClient(h.url)
  t.after(() => { c.close() })
  assert.deepEqual(await c.request('echo', { text: 'hello' }), { echoed: 'hello', length: 5 })
  assert.equal(await c.request('note', 'nothing back'), null)
  const news: unknown[] = []
  const listener = (data: { headline: string }): void => { news.push(data) }
  c.on('news', listener)
  h.app.realtime.broadcast('news', { headline: 'typed' })
  await waitFor(() => news.length === 1, 3000, 'the event')
  c.off('news', listener)
  h.app.realtime.broadcast('news', { headline: 'unheard' })
  await c.request('echo', { text: 'after the broadcast' })
  assert.deepEqual(news, [{ headline: 'typed' }])
})

test('an error envelope rejects the request with the server\'s code, message and details; one for no request is an error event', { timeout: 10000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  const c = typedClient(h.url)
  t.after(() => { c.close() })
  await assert.rejects(c.request('refuse', null), (err: unknown) => {
    assert.ok(err instanceof RealtimeClientError)
    assert.deepEqual([err.code, err.message, err.details], ['NOT_ALLOWED', 'not for you', { why: 'test' }])
    return true
  })
  await assert.rejects(c.request('echo', { text: 1 } as never), (err: RealtimeClientError) => {
    assert.equal(err.code, 'VALIDATION_FAILED')
    assert.ok(Array.isArray(err.details) && err.details.length > 0)
    return true
  })
  // A fire-and-forget message the server refuses: no request to reject, so the app hears of it as an event.
  const error = nextEvent(c, 'error')
  c.send('echo', { text: 2 } as never)
  assert.equal((await error).code, 'VALIDATION_FAILED')
})

test('a request without a reply in time rejects with TIMEOUT; its late reply is ignored; 0 or Infinity wait as long as it takes', { timeout: 10000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  const c = typedClient(h.url)
  t.after(() => { c.close() })
  const started = Date.now()
  await assert.rejects(c.request('hang', 300, { timeout: 50 }), { code: 'TIMEOUT' })
  assert.ok(Date.now() - started < 250)
  await sleep(350) // the reply arrives and settles nothing
  assert.deepEqual(await c.request('echo', { text: 'x' }), { echoed: 'x', length: 1 })
  // 0 and Infinity mean no timeout (a bare setTimeout would fire Infinity at once).
  assert.deepEqual(await Promise.all([c.request('hang', 100, { timeout: 0 }), c.request('hang', 50, { timeout: Infinity })]), [100, 50])
})

test('a request made while disconnected is queued, and its timeout runs from the call: it is never sent after it', { timeout: 10000 }, async (t) => {
  const h = await serveChat()
  const { port, seen } = h
  await h.close()
  const c = typedClient(h.url)
  t.after(() => { c.close() })
  await assert.rejects(c.request('note', 'too late', { timeout: 100 }), { code: 'TIMEOUT' })
  c.send('note', 'kept')
  const back = await serveChat({ auth: false }, port, seen)
  t.after(() => back.close())
  await opened(c)
  await c.request('echo', { text: 'sync' })
  assert.deepEqual(seen.notes, ['kept'])
})

test('the queue is bounded: past maxQueue send throws QUEUE_FULL; close() rejects what waits and send throws CLOSED', { timeout: 10000 }, async (t) => {
  // Nothing listens on this port: the client keeps trying while messages queue up.
  const c = typedClient('ws://127.0.0.1:9/chat', { maxQueue: 3 })
  t.after(() => { c.close() })
  c.send('note', 'a')
  c.send('note', 'b')
  const waiting = c.request('echo', { text: 'c' })
  assert.throws(() => { c.send('note', 'd') }, (err: RealtimeClientError) => err.code === 'QUEUE_FULL' && err instanceof RealtimeClientError)
  await assert.rejects(c.request('echo', { text: 'e' }), { code: 'QUEUE_FULL' })
  c.close()
  await assert.rejects(waiting, { code: 'CLOSED' })
  assert.equal(c.state, 'closed')
  assert.throws(() => { c.send('note', 'late') }, { code: 'CLOSED' })
  await assert.rejects(c.request('echo', { text: 'late' }), { code: 'CLOSED' })
  assert.throws(() => { c.close(1001) }, RangeError, 'a code a browser cannot send is refused up front')
})

test('close() closes the socket with 1000 (the server sees it), emits close, and never reconnects', { timeout: 10000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  const c = typedClient(h.url)
  let reconnecting = 0
  c.on('reconnecting', () => { reconnecting++ })
  await opened(c)
  const pending = c.request('hang', 1000)
  const closed = nextEvent(c, 'close')
  c.close()
  assert.deepEqual(await closed, { code: CloseCode.NORMAL, reason: '' })
  await assert.rejects(pending, { code: 'CLOSED' })
  await waitFor(() => h.seen.closes.length === 1, 3000, 'the server\'s onClose')
  assert.deepEqual(h.seen.closes, [ServerCloseCode.NORMAL])
  await sleep(100)
  assert.equal(reconnecting, 0)
  assert.equal(h.app.realtime.connections.size, 0)
})

test('a closed client keeps nothing alive: a Node process using it exits', { timeout: 20000 }, async (t) => {
  const h = await serveChat()
  t.after(() => h.close())
  // A black hole: accepts TCP, never answers, so a connect attempt and its diagnosis both hang until aborted.
  const held = new Set<Socket>()
  const hole = createServer((socket) => { held.add(socket) })
  hole.listen(0, '127.0.0.1')
  await once(hole, 'listening')
  t.after(() => { for (const s of held) s.destroy(); hole.close() })
  const holePort = (hole.address() as { port: number }).port
  const clientUrl = pathToFileURL(join(import.meta.dirname, '../lib/client/index.ts')).href
  const script = `
    import WebSocket from 'ws'
    import { createClient } from ${JSON.stringify(clientUrl)}
    const options = { WebSocket, backoff: { base: 60000 }, pingInterval: 20, pingTimeout: 5000, connectTimeout: 100 }
    const live = createClient(${JSON.stringify(h.url)}, options)
    await live.request('echo', { text: 'x' })
    const pending = live.request('hang', 5000).catch((err) => err.code)
    const stuck = createClient('ws://127.0.0.1:${holePort}/chat', options)
    await new Promise((resolve) => stuck.on('close', resolve)) // connect timed out; the diagnosis now waits on the hole
    const away = createClient('ws://127.0.0.1:9/chat', options)
    await new Promise((resolve) => away.on('reconnecting', resolve)) // a 60 s reconnect timer is set
    live.close(); stuck.close(); away.close()
    console.log(await pending)
  `
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { out += chunk })
  const killer = setTimeout(() => { child.kill() }, 8000)
  const [code, signal] = await once(child, 'exit') as [number | null, string | null]
  clearTimeout(killer)
  assert.equal(signal, null, 'the process did not exit by itself within 8 s')
  assert.equal(code, 0)
  assert.equal(out.trim(), 'CLOSED')
})

test('a connect that hangs times out, and close() during the diagnosis that follows aborts its request at once', { timeout: 10000 }, async (t) => {
  // Reads (and drops) what comes, so that a peer's close is seen; answers nothing.
  const held: Array<{ socket: Socket, closed: Promise<unknown> }> = []
  const hole = createServer((socket) => { held.push({ socket: socket.resume(), closed: once(socket, 'close') }) })
  hole.listen(0, '127.0.0.1')
  await once(hole, 'listening')
  t.after(() => { for (const { socket } of held) socket.destroy(); hole.close() })
  const c = typedClient(`ws://127.0.0.1:${(hole.address() as { port: number }).port}/chat`, { connectTimeout: 300 })
  t.after(() => { c.close() })
  const started = Date.now()
  assert.deepEqual(await nextEvent(c, 'close'), { code: CloseCode.ABNORMAL, reason: 'connect timeout' })
  assert.ok(Date.now() - started >= 290)
  await held[0]!.closed // the socket that hung was dropped
  await waitFor(() => held.length === 2, 3000, 'the diagnosis GET')
  const closing = Date.now()
  c.close()
  await held[1]!.closed
  assert.ok(Date.now() - closing < 200, 'aborted, not timed out')
})

test('the client\'s close codes agree with the server\'s', () => {
  for (const [name, code] of Object.entries(ServerCloseCode)) {
    assert.equal(CloseCode[name as keyof typeof CloseCode], code, name)
  }
})

test('the client imports nothing from Node and no server code at run time', async () => {
  const dir = new URL('../lib/client/', import.meta.url)
  for (const file of await readdir(dir)) {
    const source = await readFile(new URL(file, dir), 'utf8')
    for (const [, clause, from] of source.matchAll(/^(?:import|export)\s+(type\s+)?[^'"]*?from\s+'([^']+)'/gm)) {
      if (clause === undefined) assert.match(from!, /^\.\/[\w-]+\.js$/, `${file} imports ${from!} at run time`)
    }
    assert.doesNotMatch(source, /\b(require\(|process\.|Buffer\b|import\()/, file)
  }
})

test('the pre-bundled client builds into one file and works', { timeout: 30000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'realtime-client-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const outfile = join(dir, 'realtime-client.js')
  const { stdout } = await promisify(execFile)(process.execPath, ['scripts/bundle-client.mjs', '--outfile', outfile], { cwd: join(import.meta.dirname, '..') })
  assert.match(stdout, /KB minified, [\d.]+ KB gzipped/)
  const bundled = await import(pathToFileURL(outfile).href) as typeof import('../lib/client/index.js')
  const source = await readFile(outfile, 'utf8')
  assert.doesNotMatch(source, /(?:^|[;}])\s*(?:import\s*[\w{*]|export\s*[^;]*\bfrom\s*["'])|\bimport\s*\(/, 'one file: it imports nothing')
  const h = await serveChat()
  t.after(() => h.close())
  const c = bundled.createClient<ChatRoute>(h.url, { WebSocket })
  t.after(() => { c.close() })
  assert.deepEqual(await c.request('echo', { text: 'bundled' }), { echoed: 'bundled', length: 7 })
  await assert.rejects(c.request('refuse', null), (err: unknown) => err instanceof bundled.RealtimeClientError)
})
