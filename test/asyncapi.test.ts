// The AsyncAPI document: valid for @asyncapi/parser, faithful to the routes, and served as JSON, YAML and a page.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import jwt from '@fastify/jwt'
import { Type, type TSchema } from '@sinclair/typebox'
import { Parser } from '@asyncapi/parser'
import { parse as parseYaml } from 'yaml'
import realtime, { ErrorCode, HandshakeCode, type AsyncApiDocument, type RealtimeOptions } from '../lib/index.js'
import { buildExample, EXAMPLE_INFO } from '../example/app.js'
import { SECRET } from './helpers/app.js'

const SNAPSHOT = new URL('./fixtures/asyncapi-example.json', import.meta.url)
const SERVERS = { local: { host: 'localhost:3000', protocol: 'ws' } }
const INFO = { title: 'test', version: '0.0.1' }

/** Errors (severity 0) the parser reports; warnings and hints are listed in the message when there are errors. */
async function parserErrors (document: AsyncApiDocument): Promise<string[]> {
  const { document: parsed, diagnostics } = await new Parser().parse(JSON.stringify(document))
  const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.code}: ${d.message} at ${d.path.join('/')}`)
  if (parsed === undefined && errors.length === 0) errors.push('the parser returned no document')
  return errors
}

async function app (setup: (app: FastifyInstance) => void | Promise<void>, options: RealtimeOptions = {}): Promise<FastifyInstance> {
  const instance = Fastify({ logger: false })
  await instance.register(jwt, { secret: SECRET })
  await instance.register(realtime, { heartbeat: false, ...options })
  await setup(instance)
  return instance
}

test('the example\'s document passes @asyncapi/parser with no errors and equals the checked-in snapshot', { timeout: 60000 }, async (t) => {
  const { app: example } = await buildExample({ logger: false })
  t.after(() => example.close())
  await example.ready()
  const document = example.realtime.asyncapi({ info: EXAMPLE_INFO, servers: SERVERS })
  assert.deepEqual(await parserErrors(document), [])
  // The check bites: a method the WebSocket binding does not allow is an error.
  const broken = structuredClone(document) as any
  broken.channels.chat.bindings.ws.method = 'PUT'
  assert.notDeepEqual(await parserErrors(broken), [])
  // UPDATE_SNAPSHOTS=1 rewrites it after an intended change; review the diff before committing it.
  if (process.env.UPDATE_SNAPSHOTS === '1') await writeFile(SNAPSHOT, JSON.stringify(document, null, 2) + '\n')
  assert.deepEqual(document, JSON.parse(await readFile(SNAPSHOT, 'utf8')))
})

const Node: TSchema = Type.Recursive((This) => Type.Object({ name: Type.String(), children: Type.Array(This) }), { $id: 'Node' })
const User = Type.Object({ id: Type.String(), name: Type.String() }, { $id: 'https://example.com/schemas/user.json' })
const Shapes = Type.Module({ Shape: Type.Object({ corners: Type.Ref('Corner') }), Corner: Type.Integer({ minimum: 0 }) })

/** Every option a route has: prefix, parameters, all four token sources, protocols, origins, binary, events, replies, refs. */
async function everyOption (instance: FastifyInstance): Promise<void> {
  await instance.register(async (v1) => {
    v1.realtimeRoute({
      url: '/rooms/:room',
      auth: { sources: ['header', 'protocol', 'cookie', 'query'], cookieName: 'sid' },
      protocols: ['chat.v2'],
      origins: ['https://app.example.com'],
      requireOrigin: true,
      messages: {
        'tree.put': { schema: Type.Object({ tree: Node }), reply: Type.Object({ saved: Type.Date() }), handler: () => ({ saved: new Date() }) },
        'user.get': { schema: Type.Object({ id: Type.String() }), reply: User, handler: ({ id }) => ({ id, name: 'x' }) },
        shape: { schema: Shapes.Import('Shape'), handler: () => null },
        'odd type/with~chars': { schema: Type.Object({}), handler: () => null }
      },
      events: {
        'user.joined': Type.Object({ user: Type.Ref(User), at: Type.Date(), role: Type.RegExp(/^(admin|member)$/) }),
        tick: Type.Void()
      },
      binary: () => {}
    })
    v1.realtimeRoute({ url: '/open', auth: false, messages: { echo: { schema: Type.Any(), handler: (d) => d } } })
    v1.realtimeRoute({ url: '/custom', auth: { authenticate: () => ({ sub: 'a' }) }, messages: { echo: { schema: Type.String(), handler: (d) => d } } })
  }, { prefix: '/v1' })
}

test('a route with every option gives a document the parser accepts, with what the routes say', { timeout: 60000 }, async (t) => {
  const instance = await app(everyOption)
  t.after(() => instance.close())
  await instance.ready()
  const doc = instance.realtime.asyncapi({ info: INFO, servers: { prod: { host: 'chat.example.com', protocol: 'wss' } } })
  assert.deepEqual(await parserErrors(doc), [])

  assert.deepEqual(Object.keys(doc.channels), ['v1.rooms._room', 'v1.open', 'v1.custom'])
  const rooms = doc.channels['v1.rooms._room'] as any
  assert.equal(rooms.address, '/v1/rooms/{room}')
  assert.deepEqual(rooms.parameters, { room: {} })
  // The handshake: bindings, security schemes, refusals and close codes.
  assert.deepEqual(rooms.bindings.ws.query, { type: 'object', properties: { token: { type: 'string', description: 'The session token (JWT).' } } })
  assert.deepEqual(rooms.bindings.ws.headers.required, ['Origin'])
  assert.match(rooms.bindings.ws.headers.properties['Sec-WebSocket-Protocol'].description, /`chat\.v2`/)
  assert.deepEqual(Object.keys(doc.components.securitySchemes ?? {}), ['bearerHeader', 'bearerSubprotocol', 'cookie_sid', 'queryToken'])
  assert.deepEqual(doc.components.securitySchemes?.cookie_sid, { type: 'httpApiKey', name: 'sid', in: 'cookie', description: 'The `sid` cookie; a cookie session also needs an Origin header.' })
  for (const code of Object.keys(HandshakeCode)) assert.match(rooms.description, new RegExp(`\`${code}\``))
  assert.match(rooms.description, /\| 4408 \| `SLOW_CONSUMER` \| slow consumer \|/)
  const open = doc.channels['v1.open'] as any
  assert.doesNotMatch(open.description, /MISSING_TOKEN|4401/, 'a route without sessions has no session refusals')

  // Messages: the envelope with type as a const, replies, the error envelope with the protocol's codes.
  const put = rooms.messages['tree.put']
  assert.deepEqual(put.correlationId, { location: '$message.payload#/id' })
  assert.deepEqual(put.payload.properties.type, { const: 'tree.put' })
  assert.deepEqual(put.payload.properties.data.properties.tree, { $ref: '#/components/schemas/Node' })
  assert.deepEqual(rooms.messages['tree.put.reply'].payload.properties.data.properties.saved, { type: 'string', format: 'date-time' })
  assert.deepEqual(rooms.messages['user.get.reply'].payload.properties.data, { $ref: '#/components/schemas/example.com_schemas_user.json' })
  assert.deepEqual((doc.components.schemas as any).Node.properties.children.items, { $ref: '#/components/schemas/Node' })
  assert.deepEqual((doc.components.schemas as any).Corner, { type: 'integer', minimum: 0 })
  assert.ok('odd_type_with_chars' in rooms.messages)
  assert.deepEqual(rooms.messages.error.payload.properties.error.properties.code.anyOf[0].enum, Object.values(ErrorCode))
  const event = rooms.messages['user.joined.event']
  assert.deepEqual(event.payload.properties.data.properties.at, { type: 'string', format: 'date-time' })
  assert.deepEqual(event.payload.properties.data.properties.role, { type: 'string', pattern: '^(admin|member)$' })
  assert.deepEqual(rooms.messages['tick.event'].payload.properties.data, { type: 'null' })
  assert.deepEqual(Object.keys(event.payload.properties), ['type', 'data'], 'without history, no event is numbered')
  assert.equal(rooms.messages.binary.contentType, 'application/octet-stream')

  // Operations: receive with a reply (the reply, then the error), send per event, the reserved types.
  const receive = doc.operations['v1.rooms._room.receive.tree.put'] as any
  assert.equal(receive.action, 'receive')
  assert.deepEqual(receive.reply.messages, [{ $ref: '#/channels/v1.rooms._room/messages/tree.put.reply' }, { $ref: '#/channels/v1.rooms._room/messages/error' }])
  assert.equal(receive.security.length, 4)
  assert.equal((doc.operations['v1.rooms._room.send.user.joined'] as any).action, 'send')
  assert.ok('v1.rooms._room.receive.ping' in doc.operations)
  assert.ok('v1.rooms._room.receive.auth.refresh' in doc.operations)
  assert.ok(!('v1.open.receive.auth.refresh' in doc.operations), 'no auth.refresh without sessions')
  assert.ok(!('v1.custom.receive.auth.refresh' in doc.operations), 'no auth.refresh with authenticate (no token to renew)')
  assert.equal((doc.operations['v1.open.receive.echo'] as any).security, undefined)
})

async function generationError (schemas: { message?: TSchema, reply?: TSchema, event?: TSchema }): Promise<Error & { code?: string }> {
  const instance = await app((a) => {
    a.realtimeRoute({
      url: '/bad',
      auth: false,
      messages: { 'thing.put': { schema: schemas.message ?? Type.Object({}), ...(schemas.reply !== undefined ? { reply: schemas.reply } : {}), handler: () => null } },
      ...(schemas.event !== undefined ? { events: { 'thing.changed': schemas.event } } : {})
    })
  })
  try {
    await instance.ready()
    instance.realtime.asyncapi({ info: INFO })
  } catch (err) {
    return err as Error & { code?: string }
  } finally {
    await instance.close()
  }
  throw new Error('the document was generated')
}

test('kinds JSON cannot carry fail generation with an error naming the route, the type and the path', { timeout: 30000 }, async () => {
  const cases: Array<[Parameters<typeof generationError>[0], RegExp]> = [
    [{ message: Type.Object({ n: Type.BigInt() }) }, /route \/bad, type "thing\.put", at \/properties\/n: Type\.BigInt\(\)/],
    [{ reply: Type.Object({ bytes: Type.Uint8Array() }) }, /route \/bad, type "thing\.put", at \/properties\/bytes: Type\.Uint8Array\(\)/],
    [{ message: Type.Object({ when: Type.Date() }) }, /type "thing\.put", at \/properties\/when: Type\.Date\(\), which no JSON message can satisfy/],
    [{ event: Type.Object({ who: Type.Ref('Nobody') }) }, /type "thing\.changed", at \/properties\/who: a \$ref to "Nobody"/],
    [{ event: Type.Object({ a: Type.Array(Type.Undefined()) }) }, /type "thing\.changed", at \/properties\/a\/items: Type\.Undefined\(\)/],
    [{ event: Type.Object({ r: Type.RegExp(/x/i) }) }, /at \/properties\/r: Type\.RegExp\(\) with flags "i"/],
    [{ event: Type.Object({ f: Type.Function([], Type.String()) }) }, /at \/properties\/f: a TypeBox kind JSON Schema cannot express \(type "Function"\)/]
  ]
  for (const [schemas, message] of cases) {
    const err = await generationError(schemas)
    assert.equal(err.code, 'RT_ERR_ASYNCAPI_SCHEMA')
    assert.match(err.message, message)
  }
})

test('with the asyncapi option, a schema JSON cannot express fails app.ready()', { timeout: 10000 }, async (t) => {
  const instance = await app((a) => {
    a.realtimeRoute({ url: '/bad', auth: false, messages: { big: { schema: Type.BigInt(), handler: () => null } } })
  }, { asyncapi: {} })
  t.after(() => instance.close())
  await assert.rejects(async () => { await instance.ready() }, { code: 'RT_ERR_ASYNCAPI_SCHEMA', message: /route \/bad, type "big", at \(data\): Type\.BigInt\(\)/ })
})

test('asyncapi() before app.ready() throws, since plugins may still add routes', { timeout: 10000 }, async (t) => {
  const instance = await app(() => {})
  t.after(() => instance.close())
  assert.throws(() => instance.realtime.asyncapi({ info: INFO }), { code: 'RT_ERR_ASYNCAPI_NOT_READY' })
})

test('the asyncapi option serves the document as JSON and YAML and a page, outside the handshake and hidden from swagger', { timeout: 30000 }, async (t) => {
  const hidden: Record<string, unknown> = {}
  const instance = Fastify({ logger: false })
  instance.addHook('onRoute', (route) => { hidden[route.url] = (route.schema as { hide?: unknown } | undefined)?.hide })
  await instance.register(jwt, { secret: SECRET })
  let api: FastifyInstance | undefined
  await instance.register(async (context) => {
    api = context
    await context.register(realtime, { heartbeat: false, asyncapi: { info: INFO } })
    await everyOption(context)
  }, { prefix: '/api' })
  t.after(() => instance.close())
  await instance.ready()
  const realtimeOf = (api as FastifyInstance).realtime

  const json = await instance.inject({ url: '/api/asyncapi.json', headers: { host: 'chat.example.com:8080' } })
  assert.equal(json.statusCode, 200)
  assert.match(json.headers['content-type'] as string, /^application\/json/)
  const served = json.json() as AsyncApiDocument
  assert.deepEqual(served.servers, { default: { host: 'chat.example.com:8080', protocol: 'ws' } })
  assert.deepEqual(served, realtimeOf.asyncapi({ info: INFO, servers: served.servers }))
  assert.equal(served.channels['api.v1.rooms._room']?.address, '/api/v1/rooms/{room}')

  const yaml = await instance.inject({ url: '/api/asyncapi.yaml', headers: { host: 'chat.example.com:8080' } })
  assert.equal(yaml.statusCode, 200)
  assert.match(yaml.headers['content-type'] as string, /^application\/yaml/)
  assert.match(yaml.body, /^asyncapi: 3\.0\.0\n/)
  assert.deepEqual(parseYaml(yaml.body), served)

  const page = await instance.inject('/api/asyncapi')
  assert.equal(page.statusCode, 200)
  assert.match(page.headers['content-type'] as string, /^text\/html/)
  assert.doesNotMatch(page.body, /\ssrc=|<link|@import|url\(/, 'the page loads nothing from anywhere')
  assert.match(page.body, /data-json="\/api\/asyncapi\.json"/)

  for (const url of ['/api/asyncapi.json', '/api/asyncapi.yaml', '/api/asyncapi']) assert.equal(hidden[url], true, `${url} is hidden from swagger`)
  assert.equal(realtimeOf.stats().refused.UPGRADE_REQUIRED, undefined, 'no handshake ran')
})

test('asyncapi options: custom paths, no page, onRequest guarding the routes, and bad paths refused', { timeout: 30000 }, async (t) => {
  const instance = await app((a) => {
    a.realtimeRoute({ url: '/chat', auth: false, messages: { hi: { schema: Type.Object({}), handler: () => null } } })
  }, {
    asyncapi: {
      path: '/docs/realtime',
      page: false,
      servers: SERVERS,
      onRequest: async (request, reply) => { if (request.headers['x-key'] !== 'k') await reply.code(401).send({ statusCode: 401 }) }
    }
  })
  t.after(() => instance.close())
  assert.equal((await instance.inject('/docs/realtime')).statusCode, 401)
  const json = await instance.inject({ url: '/docs/realtime', headers: { 'x-key': 'k' } })
  assert.deepEqual((json.json() as AsyncApiDocument).servers, SERVERS)
  assert.equal((await instance.inject({ url: '/docs/realtime.yaml', headers: { 'x-key': 'k' } })).statusCode, 200)
  assert.equal((await instance.inject({ url: '/asyncapi', headers: { 'x-key': 'k' } })).statusCode, 404)

  for (const asyncapi of [{ path: 'asyncapi.json' }, { page: 'docs' }, 'yes']) {
    const bad = Fastify({ logger: false })
    await assert.rejects(async () => { await bad.register(realtime, { auth: false, asyncapi: asyncapi as never }) }, { code: 'RT_ERR_OPTIONS' })
    await bad.close().catch(() => {})
  }
})

test('a reply that is not a schema fails at app.ready(), naming the route and the type', { timeout: 10000 }, async () => {
  const instance = Fastify({ logger: false })
  await instance.register(realtime, { heartbeat: false, auth: false })
  instance.realtimeRoute({ url: '/r', messages: { count: { schema: Type.Object({}), reply: 'number' as unknown as TSchema, handler: () => 1 } } })
  await assert.rejects(async () => { await instance.ready() }, { code: 'RT_ERR_ROUTE', message: /route \/r: message type "count": reply must be a schema/ })
  await instance.close().catch(() => {})
})

test('Fastify\'s path syntax maps to AsyncAPI addresses exactly: several parameters in a segment, regexps, optional, ::', { timeout: 60000 }, async (t) => {
  const instance = await app(async (i) => {
    for (const url of ['/files/:name.:ext', '/range/:from-:to', '/items/:id?', '/re/:id(^\\d+)', '/lit/a::b/:x']) {
      i.realtimeRoute({ url, auth: false, messages: { echo: { schema: Type.Any(), handler: (d) => d } } })
    }
  })
  t.after(() => instance.close())
  await instance.ready()
  const doc = instance.realtime.asyncapi({ info: INFO })
  assert.deepEqual(await parserErrors(doc), [])
  const channels = Object.values(doc.channels) as Array<{ address: string, parameters?: Record<string, unknown> }>
  assert.deepEqual(channels.map((c) => [c.address, c.parameters]), [
    ['/files/{name}.{ext}', { name: {}, ext: {} }],
    ['/range/{from}-{to}', { from: {}, to: {} }],
    ['/items/{id}', { id: { description: 'May be empty.' } }],
    ['/re/{id}', { id: {} }],
    ['/lit/a:b/{x}', { x: {} }]
  ])
})

test('the served document describes history and presence as app.realtime.asyncapi() does: rt.resume, rt.position, rt.presence, its diff and left', { timeout: 30000 }, async (t) => {
  const instance = await app((a) => {
    a.realtimeRoute({ url: '/chat', auth: false, messages: { echo: { schema: Type.Any(), handler: (d) => d } }, events: { said: Type.String() } })
  }, { asyncapi: { info: INFO }, history: { rooms: () => true }, presence: { rooms: () => true } })
  t.after(() => instance.close())
  await instance.ready()
  const served = (await instance.inject({ method: 'GET', url: '/asyncapi.json' })).json()
  assert.deepEqual(await parserErrors(served), [])
  const messages = Object.keys(served.channels.chat.messages as Record<string, unknown>)
  for (const name of ['rt.resume', 'rt.position', 'rt.presence', 'rt.presence.diff', 'rt.presence.left']) assert.ok(messages.includes(name), `${name} in the served document`)
  // An event may go to a history room (numbered: room and offset, both or neither) or anywhere else (neither).
  const said = served.channels.chat.messages['said.event'].payload
  assert.deepEqual(Object.keys(said.properties), ['type', 'data', 'room', 'offset'])
  assert.deepEqual(said.required, ['type', 'data'])
  assert.deepEqual(said.dependencies, { room: ['offset'], offset: ['room'] })
  const { servers: _s, ...built } = instance.realtime.asyncapi({ info: INFO })
  const { servers: _t, ...rest } = served
  assert.deepEqual(rest, JSON.parse(JSON.stringify(built)), 'the same document as app.realtime.asyncapi()')
})
