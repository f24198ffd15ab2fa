import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import diagnostics from 'node:diagnostics_channel'
import { AsyncLocalStorage } from 'node:async_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { SpanStatusCode, trace } from '@opentelemetry/api'
import { Type } from '@sinclair/typebox'
import { HandshakeError, RealtimeError, TracingChannelName } from '../lib/index.js'
import { startApp, type TestApp } from './helpers/app.js'
import { connect, refusalOf } from './helpers/client.js'
import { docBlock } from './helpers/readme.js'

const EVENTS = ['start', 'end', 'asyncStart', 'asyncEnd', 'error'] as const
type Event = typeof EVENTS[number]

/** Subscribes to a tracing channel for the test's duration; records `[event, context]` in order. */
function record (t: TestContext, name: string): Array<[Event, any]> {
  const events: Array<[Event, any]> = []
  const handlers = Object.fromEntries(EVENTS.map((e) => [e, (context: unknown) => { events.push([e, context]) }])) as Record<Event, (c: unknown) => void>
  const channel = diagnostics.tracingChannel(name)
  channel.subscribe(handlers)
  t.after(() => { channel.unsubscribe(handlers) })
  return events
}

const route = {
  url: '/rt',
  messages: {
    echo: { schema: Type.String(), handler: (text: string) => text },
    later: { schema: Type.String(), handler: async (text: string) => { await sleep(5); return text } },
    boom: { schema: Type.Null(), handler: () => { throw new Error('handler bug') } },
    rejects: { schema: Type.Null(), handler: async () => { await sleep(1); throw new RealtimeError('NOT_NOW', 'later') } },
    shout: { schema: Type.String(), handler: (text: string) => { app?.realtime.to('lobby').send('shouted', text) } }
  }
}
let app: TestApp['app'] | undefined

async function tracedApp (t: TestContext): Promise<TestApp> {
  const h = await startApp({
    jwt: false,
    realtime: {
      auth: {
        authenticate: (request) => {
          if (request.headers['x-user'] === 'banned') throw new HandshakeError('INVALID_TOKEN', 'banned')
          return request.headers['x-user'] === undefined ? undefined : { sub: String(request.headers['x-user']) }
        }
      }
    },
    setup: (instance) => { instance.realtimeRoute(route) }
  })
  app = h.app
  t.after(() => h.close())
  return h
}

test('a reply: start and end around a synchronous handler, with the context an APM needs; the reply is sent inside', { timeout: 10000 }, async (t) => {
  const h = await tracedApp(t)
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  const events = record(t, TracingChannelName.MESSAGE)
  const sent: number[] = []
  const conn = h.app.realtime.byUser('alice')[0]
  assert.ok(conn)
  const original = conn.sendEnvelope.bind(conn)
  conn.sendEnvelope = (text, slot) => { sent.push(events.length); return original(text, slot) }
  c.sendJson({ type: 'echo', data: 'hi', id: 'm1' })
  assert.equal((await c.nextMessage()).data, 'hi')
  assert.deepEqual(events.map(([e]) => e), ['start', 'end'])
  const context = events[0]?.[1]
  assert.equal(events[1]?.[1], context, 'one context object for the whole operation')
  assert.deepEqual({ ...context, connection: undefined }, {
    route: '/rt', type: 'echo', connectionId: conn.id, userId: 'alice', messageId: 'm1', data: 'hi', result: 'hi', connection: undefined
  })
  assert.equal(context.connection, conn)
  assert.deepEqual(sent, [1], 'the reply left between start and end')

  // An async handler: end when it returned its promise; asyncStart and asyncEnd around the reply.
  events.length = 0
  c.sendJson({ type: 'later', data: 'soon', id: 2 })
  assert.equal((await c.nextMessage()).data, 'soon')
  assert.deepEqual(events.map(([e]) => e), ['start', 'end', 'asyncStart', 'asyncEnd'])
  assert.equal(events[3]?.[1].result, 'soon')
})

test('a handler error: error before end (sync) or before asyncStart (async), carrying what was thrown', { timeout: 10000 }, async (t) => {
  const h = await tracedApp(t)
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  const events = record(t, TracingChannelName.MESSAGE)
  assert.equal((await c.request('boom', null)).error.code, 'INTERNAL')
  assert.deepEqual(events.map(([e]) => e), ['start', 'error', 'end'])
  assert.equal(events[1]?.[1].error.message, 'handler bug')
  assert.equal(events[1]?.[1].type, 'boom')

  events.length = 0
  assert.equal((await c.request('rejects', null)).error.code, 'NOT_NOW')
  assert.deepEqual(events.map(([e]) => e), ['start', 'end', 'error', 'asyncStart', 'asyncEnd'])
  assert.ok(events[2]?.[1].error instanceof RealtimeError)

  // A message refused before any handler (its schema) is no span: metrics count it.
  events.length = 0
  assert.equal((await c.request('echo', 42)).error.code, 'VALIDATION_FAILED')
  assert.deepEqual(events, [])
})

test('a handshake: a refusal is an error with the HandshakeError; an accepted one ends with the user id', { timeout: 10000 }, async (t) => {
  const h = await tracedApp(t)
  const events = record(t, TracingChannelName.HANDSHAKE)
  const refusal = await refusalOf(connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'banned' } }))
  assert.equal(refusal.statusCode, 401)
  assert.deepEqual(events.map(([e]) => e), ['start', 'end', 'error', 'asyncStart', 'asyncEnd'])
  const refused = events[0]?.[1]
  assert.equal(refused.route, '/rt')
  assert.equal(refused.request.url, '/rt')
  assert.ok(refused.error instanceof HandshakeError)
  assert.equal(refused.error.code, 'INVALID_TOKEN')

  events.length = 0
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  assert.deepEqual(events.map(([e]) => e), ['start', 'end', 'asyncStart', 'asyncEnd'])
  assert.equal(events[3]?.[1].userId, 'alice')
  assert.equal(events[3]?.[1].error, undefined)
})

test('a fan-out: start and end with the target, the type and the members reached; nested inside the message\'s span', { timeout: 10000 }, async (t) => {
  const h = await tracedApp(t)
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  h.app.realtime.byUser('alice')[0]?.join('lobby')
  const order: string[] = []
  const message = diagnostics.tracingChannel(TracingChannelName.MESSAGE)
  const fanout = diagnostics.tracingChannel(TracingChannelName.FANOUT)
  const fanouts: any[] = []
  const onMessage = { start: () => order.push('message:start'), end: () => order.push('message:end'), asyncStart () {}, asyncEnd () {}, error () {} }
  const onFanout = { start: (ctx: any) => { order.push('fanout:start'); fanouts.push(ctx) }, end: () => order.push('fanout:end'), asyncStart () {}, asyncEnd () {}, error () {} }
  message.subscribe(onMessage)
  fanout.subscribe(onFanout)
  t.after(() => { message.unsubscribe(onMessage); fanout.unsubscribe(onFanout) })
  c.sendJson({ type: 'shout', data: 'hey', id: 1 })
  assert.equal((await c.nextMessage()).type, 'shouted')
  await c.nextMessage()
  assert.deepEqual(order, ['message:start', 'fanout:start', 'fanout:end', 'message:end'])
  assert.deepEqual(fanouts[0], { target: { kind: 'room', name: 'lobby' }, type: 'shouted', except: undefined, result: 1 })
})

test('an AsyncLocalStorage bound to the start channel is the store inside the handler (how an APM carries its span)', { timeout: 10000 }, async (t) => {
  const h = await tracedApp(t)
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  const store = new AsyncLocalStorage<{ span: string }>()
  const channel = diagnostics.tracingChannel(TracingChannelName.MESSAGE)
  channel.start.bindStore(store, (context: any) => ({ span: `${context.type}#${String(context.messageId)}` }))
  t.after(() => { channel.start.unbindStore(store) })
  const seen: Array<string | undefined> = []
  const onEnd = { start () {}, end: () => seen.push(store.getStore()?.span), asyncStart () {}, asyncEnd: () => seen.push(store.getStore()?.span), error () {} }
  channel.subscribe(onEnd)
  t.after(() => { channel.unsubscribe(onEnd) })
  await c.request('later', 'x')
  assert.deepEqual(seen, ['later#1', 'later#1'])
})

test('nobody subscribed: nothing is published, and handlers run as before', { timeout: 10000 }, async (t) => {
  const h = await tracedApp(t)
  for (const name of Object.values(TracingChannelName)) assert.equal(diagnostics.tracingChannel(name).hasSubscribers, false, name)
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  assert.equal((await c.request('echo', 'plain')).data, 'plain')
  assert.equal((await c.request('boom', null)).error.code, 'INTERNAL')
})

// Last in this file: the docs' subscriber stays subscribed until the process ends.
test('the OpenTelemetry snippet of docs/08-observability.md makes one span per message, ended after the reply, marked on a handler error', { timeout: 20000 }, async (t) => {
  const code = await docBlock('observability', 'An OpenTelemetry span per message:')
  // A recording tracer provider stands in for the SDK: the snippet uses only the API.
  const spans: Array<{ name: string, attributes: Record<string, unknown>, status?: { code: number }, exceptions: unknown[], ended: number }> = []
  trace.setGlobalTracerProvider({
    getTracer: () => ({
      startSpan: (name: string, options: { attributes: Record<string, unknown> }) => {
        const span = { name, attributes: options.attributes, status: undefined as { code: number } | undefined, exceptions: [] as unknown[], ended: 0 }
        spans.push(span)
        return {
          end: () => { span.ended++ },
          setStatus: (status: { code: number }) => { span.status = status },
          recordException: (err: unknown) => { span.exceptions.push(err) }
        }
      }
    })
  } as never)
  t.after(() => { trace.disable() })
  const dir = new URL('artifacts/', import.meta.url)
  await mkdir(dir, { recursive: true })
  const file = new URL(`otel-snippet-${process.pid}.ts`, dir)
  await writeFile(file, code)
  t.after(() => rm(file, { force: true }))
  await import(file.href)

  const h = await tracedApp(t)
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': 'alice' } })
  t.after(() => { c.destroy() })
  assert.equal((await c.request('echo', 'a')).data, 'a')
  assert.equal((await c.request('later', 'b')).data, 'b')
  assert.equal((await c.request('boom', null)).error.code, 'INTERNAL')
  const conn = h.app.realtime.byUser('alice')[0]
  assert.deepEqual(spans.map((s) => [s.name, s.ended, s.status?.code ?? 0]), [['realtime echo', 1, 0], ['realtime later', 1, 0], ['realtime boom', 1, SpanStatusCode.ERROR]])
  assert.deepEqual(spans[0]?.attributes, { 'realtime.route': '/rt', 'realtime.type': 'echo', 'realtime.connection_id': conn?.id, 'enduser.id': 'alice' })
  assert.equal((spans[2]?.exceptions[0] as Error).message, 'handler bug')
})
