// No log line of any level carries a session token, whatever spelling of a realtime route's path a client uses and
// whatever router options the app set: the redactor reads the path as the most permissive router would.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import fc from 'fast-check'
import { Type } from '@sinclair/typebox'
import { startApp, type TestApp } from './helpers/app.js'
import { connect } from './helpers/client.js'

const route = { url: '/chat/:room', messages: { echo: { schema: Type.Any(), handler: (d: unknown) => d } } }

/** One character of a path, spelled as a client may: as is, upper-cased, or percent-escaped. */
const spelledChar = (c: string): fc.Arbitrary<string> => fc.constantFrom(
  c, c.toUpperCase(), `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`, `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)

const spelledWord = (word: string): fc.Arbitrary<string> => fc.tuple(...[...word].map(spelledChar)).map((parts) => parts.join(''))

/** `/chat/<room>` with each character spelled freely, slashes doubled, a trailing slash. */
const spelledPath = fc.record({
  chat: spelledWord('chat'),
  room: spelledWord('lobby'),
  lead: fc.constantFrom('/', '//', '///'),
  mid: fc.constantFrom('/', '//'),
  tail: fc.constantFrom('', '/')
}).map(({ chat, room, lead, mid, tail }) => `${lead}${chat}${mid}${room}${tail}`)

/** The query carrying the token: `token` spelled with escapes, other parameters around it. */
const spelledQuery = fc.record({
  key: spelledWord('token').map((k) => k.replace(/T|O|K|E|N/g, (c) => c.toLowerCase())),
  before: fc.constantFrom('', 'a=1&'),
  after: fc.constantFrom('', '&b=2')
}).map(({ key, before, after }) => (token: string) => `?${before}${key}=${token}${after}`)

async function loggedApp (fastify: Record<string, unknown>): Promise<{ h: TestApp, lines: string[] }> {
  const lines: string[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  const h = await startApp({
    fastify: { logger: { level: 'trace', stream }, ...fastify },
    realtime: { auth: { sources: ['query', 'protocol'] }, refusalLogLevel: 'info' },
    setup: (app) => { app.realtimeRoute(route) }
  })
  return { h, lines }
}

for (const options of [{}, { caseSensitive: false }, { ignoreDuplicateSlashes: true }, { ignoreTrailingSlash: true, caseSensitive: false, ignoreDuplicateSlashes: true }]) {
  test(`no log line carries a token, for any spelling of the path and the query key (router options ${JSON.stringify(options)})`, { timeout: 60000 }, async (t) => {
    const { h, lines } = await loggedApp(options)
    t.after(() => h.close())
    let opened = 0
    let serial = 0
    await fc.assert(fc.asyncProperty(spelledPath, spelledQuery, fc.boolean(), async (path, query, viaProtocol) => {
      const token = h.sign({ sub: `user-${serial++}` })
      const secret = token.split('.')[2] as string
      const url = viaProtocol ? `${h.wsBase}${path}` : `${h.wsBase}${path}${query(token)}`
      try {
        const c = await connect(url, viaProtocol ? { protocols: [`bearer.${token}`, 'realtime.v1'] } : {})
        opened++
        await c.request('echo', 'hi')
        await c.close()
      } catch {
        // Not routed here under these options (404), or refused: either way, nothing logged may carry the token.
      }
      const leaked = lines.filter((line) => line.includes(secret))
      assert.deepEqual(leaked, [], `${url} leaked into the log`)
    }), { numRuns: 40, seed: 19 })
    assert.ok(opened > 0, 'some spellings reached the route')
  })
}
