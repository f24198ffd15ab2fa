// The example's served /asyncapi.json against its real traffic: every frame, both ways, is a message of the document
// (issue 22 item 8), so a client in another language can implement recovery and presence from the document alone.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { buildExample } from '../example/app.js'
import type { ChatRoute } from '../example/chat-route.js'
import { createClient, type RealtimeClient, type RecoveryEvent } from '../lib/client/index.js'
import type { AsyncApiDocument } from '../lib/index.js'
import { ChannelChecker, Traffic, type CheckedFrame, type RecordedFrame, type RecordingSocket } from './helpers/asyncapi-traffic.js'
import { waitFor } from './helpers/client.js'

async function login (base: string, name: string): Promise<string> {
  const res = await fetch(`http://${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) })
  return (await res.json() as { token: string }).token
}

/** What a checked frame shows: its direction and type, with the shape that matters for the protocol's own messages. */
function label ({ frame, value, message }: CheckedFrame): string {
  const data = value.data as Record<string, any> | undefined
  let shape = ''
  if (value.type === 'rt.position') {
    const recovery = data?.recovery as { recovered: boolean, reason?: string } | undefined
    shape = data?.offset === null ? ' offset null' : recovery === undefined ? ' join' : recovery.recovered ? ' recovered' : ` not recovered (${String(recovery.reason)})`
  } else if (value.type === 'error') {
    shape = ` ${String((value.error as { code: string }).code)}${value.id === undefined ? ' no id' : ''}`
  } else if (value.type === 'pong' || value.type === 'ping') {
    shape = value.id === undefined ? ' no id' : ' with id'
  } else if (value.type === 'reply') {
    shape = ` (${String(message?.split('/').pop())})`
  } else if (value.type === 'chat.message') {
    shape = typeof value.offset === 'number' ? ' numbered' : ''
  } else if (value.type === 'rt.presence.diff') {
    shape = ['joins', 'leaves', 'updates'].filter((k) => Object.keys(data?.[k] ?? {}).length > 0).map((k) => ` ${k}`).join('')
  } else if (frame.direction === 'client' && typeof value.key === 'string') {
    shape = ' keyed'
  }
  if (value.replayed === true) shape += ' replayed'
  return `${frame.direction} ${value.type === undefined ? '(not JSON)' : String(value.type)}${shape}${frame.rejected === true ? ' (refused)' : ''}`
}

test('every frame of the example\'s traffic, both ways, is exactly one message of its served /asyncapi.json, with no field it does not describe', { timeout: 60000 }, async (t) => {
  const example = await buildExample({ logger: false, shutdownTimeout: 500 })
  const port = await example.listen(0)
  const base = `127.0.0.1:${port}`
  const traffic = new Traffic()
  const WS = traffic.socketClass()
  const clients: Array<RealtimeClient<ChatRoute>> = []
  const raws: RecordingSocket[] = []
  t.after(async () => {
    for (const c of clients) c.close()
    for (const r of raws) r.terminate()
    await example.app.close()
  })
  const chat = (token: string, pingInterval = 25_000): RealtimeClient<ChatRoute> => {
    const client = createClient<ChatRoute>(`ws://${base}/chat`, {
      WebSocket: WS as never,
      token,
      pingInterval,
      backoff: { base: 20, cap: 100 },
      onReconnect: async (c) => { await c.request('room.join', { room: 'lobby' }) }
    })
    clients.push(client)
    return client
  }
  /** A raw socket speaking the example's protocol, and a wait for the server's next frame on it that fits. */
  const raw = async (token: string): Promise<{ ws: RecordingSocket, next: (fits: (v: any) => boolean) => Promise<any> }> => {
    const ws = new WS(`ws://${base}/chat`, [`bearer.${token}`, 'realtime.v1'])
    raws.push(ws)
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    let seen = traffic.frames.length
    const next = async (fits: (v: any) => boolean): Promise<any> => {
      let found: unknown
      await waitFor(() => {
        for (; seen < traffic.frames.length; seen++) {
          const f = traffic.frames[seen]
          if (f?.direction !== 'server') continue
          const value = JSON.parse(f.text)
          if (f.socket === ws.number && fits(value)) { found = value; seen++; return true }
        }
        return false
      }, 5000, 'a frame')
      return found
    }
    return { ws, next }
  }

  const a = chat(await login(base, 'alice'), 100)
  const b = chat(await login(base, 'bob'))
  const recoveries: RecoveryEvent[] = []
  a.on('recovery', (e) => { recoveries.push(e) })
  let received = 0
  a.on('chat.message', () => { received++ })

  // Joins: rt.position, rt.presence, the reply; alice sees bob join (a presence diff).
  await a.request('room.join', { room: 'lobby' })
  await b.request('room.join', { room: 'lobby' })
  await b.request('chat.send', { room: 'lobby', text: 'hello' })
  a.send('typing', { room: 'lobby', typing: true })
  await waitFor(() => received === 1 && (a.presence('lobby').members.get('alice') as { typing?: boolean } | undefined)?.typing === true, 5000, 'the message and the typing update')
  // Alice pings every 100 ms (no id, answered by a pong with none).
  const pongs = (): number => traffic.frames.filter((f) => f.direction === 'server' && f.text === '{"type":"pong"}').length
  await waitFor(() => pongs() > 0, 5000, 'a pong')

  // auth.refresh: a new token of the same user; another user's, and an expired one, are refused.
  assert.equal(typeof (await a.refreshToken(await login(base, 'alice'))).exp, 'number')
  await assert.rejects(a.refreshToken(await login(base, 'bob')), { code: 'INVALID_TOKEN' })
  const expired = example.app.jwt.sign({ sub: 'alice', aud: 'chat', exp: Math.floor(Date.now() / 1000) - 60 })
  await assert.rejects(a.refreshToken(expired), { code: 'TOKEN_EXPIRED' })

  // Alice is cut off while three messages are sent: she resumes (rt.resume) and gets them replayed.
  for (const conn of example.app.realtime.byUser('alice')) conn.terminate()
  for (const text of ['one', 'two', 'three']) await b.request('chat.send', { room: 'lobby', text })
  await waitFor(() => recoveries.length === 1 && received === 4, 10000, 'the recovery')
  assert.deepEqual(recoveries, [{ room: 'lobby', recovered: true, missed: 3 }])

  // Carol, raw: frames the server refuses (the document must refuse them too), a ping with an id, keyed requests.
  const carol = await raw(await login(base, 'carol'))
  carol.ws.sendRejected('not json')
  assert.equal((await carol.next((v) => v.type === 'error')).error.code, 'BAD_JSON')
  carol.ws.sendRejected(JSON.stringify({ type: 'chat.edit', id: 'u1', data: {} }))
  assert.equal((await carol.next((v) => v.id === 'u1')).error.code, 'UNKNOWN_TYPE')
  carol.ws.sendRejected(JSON.stringify({ type: 'chat.send', id: 'v1', data: { room: 'lobby', text: '' } }))
  assert.equal((await carol.next((v) => v.id === 'v1')).error.code, 'VALIDATION_FAILED')
  carol.ws.send(JSON.stringify({ type: 'ping', id: 'p1' }))
  assert.deepEqual(await carol.next((v) => v.id === 'p1'), { type: 'pong', id: 'p1' })
  // A keyed request that fails (not in the room), retried: the same error, replayed.
  const refused = { type: 'chat.send', key: 'k-refused-0000000001', data: { room: 'lobby', text: 'x' } }
  carol.ws.send(JSON.stringify({ ...refused, id: 'k1' }))
  assert.equal((await carol.next((v) => v.id === 'k1')).error.code, 'NOT_IN_ROOM')
  carol.ws.send(JSON.stringify({ ...refused, id: 'k2' }))
  assert.equal((await carol.next((v) => v.id === 'k2')).replayed, true)
  // A resume from a stale epoch: not recovered (epoch); the join's reply follows.
  carol.ws.send(JSON.stringify({ type: 'rt.resume', data: { rooms: { lobby: { epoch: 'stale', offset: 2 } } } }))
  carol.ws.send(JSON.stringify({ type: 'room.join', id: 'j1', data: { room: 'lobby' } }))
  assert.deepEqual((await carol.next((v) => v.type === 'rt.position')).data.recovery, { recovered: false, reason: 'epoch' })
  await carol.next((v) => v.id === 'j1')
  // A keyed request that succeeds, retried: the same reply, replayed.
  const sent = { type: 'chat.send', key: 'k-sent-000000000001', data: { room: 'lobby', text: 'once' } }
  carol.ws.send(JSON.stringify({ ...sent, id: 'k3' }))
  const first = await carol.next((v) => v.id === 'k3')
  carol.ws.send(JSON.stringify({ ...sent, id: 'k4' }))
  assert.deepEqual(await carol.next((v) => v.id === 'k4'), { type: 'reply', id: 'k4', data: first.data, replayed: true })
  // Leaving: rt.position with offset null, rt.presence.left, and the others see a diff.
  carol.ws.send(JSON.stringify({ type: 'room.leave', id: 'l1', data: { room: 'lobby' } }))
  assert.deepEqual((await carol.next((v) => v.type === 'rt.position')).data, { room: 'lobby', offset: null })
  await carol.next((v) => v.type === 'rt.presence.left')

  // Dave resumes from past the room's top, in its own epoch: not recovered (invalid).
  const dave = await raw(await login(base, 'dave'))
  const { epoch } = await example.app.realtime.history('lobby').position()
  dave.ws.send(JSON.stringify({ type: 'rt.resume', data: { rooms: { lobby: { epoch, offset: 999 } } } }))
  dave.ws.send(JSON.stringify({ type: 'room.join', id: 1, data: { room: 'lobby' } }))
  assert.deepEqual((await dave.next((v) => v.type === 'rt.position')).data.recovery, { recovered: false, reason: 'invalid' })
  await dave.next((v) => v.id === 1)
  await waitFor(() => a.presence('lobby').members.has('dave') && !a.presence('lobby').members.has('carol'), 10000, 'carol\'s leave and dave\'s join')

  // Erin resumes from before the 101 events the app published (the room keeps 100): not recovered (trimmed).
  const before = await example.app.realtime.history('lobby').position()
  for (let i = 0; i < 101; i++) await example.app.realtime.to('lobby').publish('chat.message', { room: 'lobby', from: 'app', text: `n${i}`, at: i })
  const erin = await raw(await login(base, 'erin'))
  erin.ws.send(JSON.stringify({ type: 'rt.resume', data: { rooms: { lobby: before } } }))
  erin.ws.send(JSON.stringify({ type: 'room.join', id: 1, data: { room: 'lobby' } }))
  assert.deepEqual((await erin.next((v) => v.type === 'rt.position')).data.recovery, { recovered: false, reason: 'trimmed' })
  await erin.next((v) => v.id === 1)

  // The document as a client in another language gets it: over HTTP from the running example.
  const res = await fetch(`http://${base}/asyncapi.json`)
  assert.equal(res.status, 200)
  const document = await res.json() as AsyncApiDocument
  const checked = new ChannelChecker(document, '/chat').check(traffic.frames)

  const counts: Record<string, number> = {}
  for (const frame of checked) counts[label(frame)] = (counts[label(frame)] ?? 0) + 1
  t.diagnostic(`${checked.length} frames checked: ${JSON.stringify(counts)}`)
  const expected = [
    'client room.join', 'client chat.send', 'client chat.send keyed', 'client typing', 'client room.leave', 'client rt.resume',
    'client ping no id', 'client ping with id', 'client auth.refresh',
    'client (not JSON) (refused)', 'client chat.edit (refused)', 'client chat.send (refused)',
    'server reply (room.join.reply)', 'server reply (chat.send.reply)', 'server reply (room.leave.reply)', 'server reply (auth.refresh.reply)',
    'server reply (chat.send.reply) replayed', 'server pong no id', 'server pong with id',
    'server error BAD_JSON no id', 'server error UNKNOWN_TYPE', 'server error VALIDATION_FAILED', 'server error NOT_IN_ROOM',
    'server error NOT_IN_ROOM replayed', 'server error INVALID_TOKEN', 'server error TOKEN_EXPIRED',
    'server rt.position join', 'server rt.position recovered', 'server rt.position not recovered (epoch)',
    'server rt.position not recovered (invalid)', 'server rt.position not recovered (trimmed)', 'server rt.position offset null',
    'server rt.presence', 'server rt.presence.diff joins', 'server rt.presence.diff updates', 'server rt.presence.diff leaves', 'server rt.presence.left',
    'server chat.message numbered'
  ]
  assert.deepEqual(expected.filter((l) => counts[l] === undefined), [], 'every kind of frame was seen')
})

test('the served document refuses server frames of shapes the server never sends, so the check above can fail', { timeout: 30000 }, async (t) => {
  const { app } = await buildExample({ logger: false })
  t.after(() => app.close())
  const checker = new ChannelChecker((await app.inject('/asyncapi.json')).json(), '/chat')
  const server = (value: unknown): RecordedFrame => ({ socket: 1, direction: 'server', text: JSON.stringify(value) })
  const event = { type: 'chat.message', data: { room: 'lobby', from: 'bob', text: 'hi', at: 1 } }
  assert.equal(checker.check([server({ ...event, room: 'lobby', offset: 1 }), server(event)]).length, 2)
  const refused: Array<[unknown, RegExp]> = [
    [{ ...event, room: 'lobby' }, /matches 0 messages/],
    [{ ...event, room: 'lobby', offset: 1, epoch: 'e' }, /\/epoch not described/],
    [{ type: 'rt.position', data: { room: 'lobby', offset: 3 } }, /matches 0 messages/],
    [{ type: 'rt.position', data: { room: 'lobby', epoch: 'e', offset: null } }, /matches 0 messages/],
    [{ type: 'rt.position', data: { room: 'lobby', epoch: 'e', offset: 3, recovery: { recovered: true, reason: 'epoch' } } }, /matches 0 messages/],
    [{ type: 'rt.position', data: { room: 'lobby', epoch: 'e', offset: 3, recovery: { recovered: false, reason: 'lost' } } }, /matches 0 messages/],
    [{ type: 'rt.presence.diff', data: { room: 'lobby', v: 2, joins: {}, leaves: [] } }, /matches 0 messages/],
    [{ type: 'reply', id: 'x', data: null }, /answers no frame the client sent/],
    [{ type: 'reply', data: null }, /matches 0 messages/]
  ]
  for (const [value, why] of refused) assert.throws(() => checker.check([server(value)]), why, JSON.stringify(value))
})
