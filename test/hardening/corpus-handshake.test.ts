// The handshake half of the bad-input corpus: each case is the exact request and the exact answer, and the
// harness's invariant is checked after every one.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { rawRequest } from '../helpers/raw.js'
import { signRaw } from '../helpers/jwt.js'
import { ALLOWED_ORIGIN, privateKey, publicPem, startHarness, type Harness } from './harness.js'

let harness: Harness
before(async () => { harness = await startHarness() })
after(async () => { await harness.close() })

/** The upgrade request, byte for byte: a GET with every header a browser would send, plus the case's own. */
function upgrade (headers: Record<string, string>, options: { path?: string, upgrade?: boolean, extra?: string } = {}): string {
  const base: Record<string, string> = options.upgrade === false
    ? { Host: '127.0.0.1' }
    : { Host: '127.0.0.1', Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64') }
  const all = { ...base, ...headers }
  return `GET ${options.path ?? '/rt'} HTTP/1.1\r\n` + Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('') + (options.extra ?? '') + '\r\n'
}

async function expectRefusal (request: string, status: number, code?: string): Promise<void> {
  const res = await rawRequest(harness.h.port, request)
  assert.equal(res.status, status, res.body)
  if (code !== undefined) assert.equal(JSON.parse(res.body).code, code)
}

async function expectUpgrade (request: string): Promise<string> {
  const res = await rawRequest(harness.h.port, request)
  assert.equal(res.status, 101)
  return res.body
}

const now = () => Math.floor(Date.now() / 1000)
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` })
const claims = { iss: 'rt-tests', aud: 'rt' }

const cases: Array<[string, () => Promise<unknown>]> = [
  ['no token: 401 MISSING_TOKEN', () => expectRefusal(upgrade({}), 401, 'MISSING_TOKEN')],
  ['an expired token: 401 TOKEN_EXPIRED', () => expectRefusal(upgrade(bearer(harness.token('a', { exp: now() - 60 }))), 401, 'TOKEN_EXPIRED')],
  ['alg: none: 401 INVALID_TOKEN', () => expectRefusal(upgrade(bearer(signRaw({ sub: 'a', ...claims }, { alg: 'none' }))), 401, 'INVALID_TOKEN')],
  ['HS256 signed with the RSA public key: 401 INVALID_TOKEN', () =>
    expectRefusal(upgrade(bearer(signRaw({ sub: 'a', ...claims }, { alg: 'HS256', key: publicPem }))), 401, 'INVALID_TOKEN')],
  ['a wrong iss: 401 INVALID_TOKEN', () => expectRefusal(upgrade(bearer(signRaw({ sub: 'a', iss: 'evil', aud: 'rt' }, { alg: 'RS256', key: privateKey }))), 401, 'INVALID_TOKEN')],
  ['a wrong aud: 401 INVALID_TOKEN', () => expectRefusal(upgrade(bearer(signRaw({ sub: 'a', iss: 'rt-tests', aud: 'x' }, { alg: 'RS256', key: privateKey }))), 401, 'INVALID_TOKEN')],
  ['exp given as a string: 401 INVALID_TOKEN', () =>
    expectRefusal(upgrade(bearer(signRaw({ sub: 'a', ...claims, exp: String(now() + 3600) }, { alg: 'RS256', key: privateKey }))), 401, 'INVALID_TOKEN')],
  ['a garbage token: 401 INVALID_TOKEN', () => expectRefusal(upgrade(bearer('%%%.$$$.###')), 401, 'INVALID_TOKEN')],
  ['an 8 KB token: 401 INVALID_TOKEN', () => expectRefusal(upgrade(bearer('e'.repeat(8 * 1024 + 1))), 401, 'INVALID_TOKEN')],
  ['a 16 KB token: 431 from Node, before any hook', () => expectRefusal(upgrade(bearer('e'.repeat(16 * 1024))), 431)],
  ['an Origin with the allowed one as a prefix: 403', () => expectRefusal(upgrade({ Origin: `${ALLOWED_ORIGIN}.evil.com`, ...bearer(harness.token('a')) }), 403, 'FORBIDDEN_ORIGIN')],
  ['an Origin with the allowed one as a suffix: 403', () => expectRefusal(upgrade({ Origin: 'https://evil-allowed.example', ...bearer(harness.token('a')) }), 403, 'FORBIDDEN_ORIGIN')],
  ['Origin: null: 403', () => expectRefusal(upgrade({ Origin: 'null', ...bearer(harness.token('a')) }), 403, 'FORBIDDEN_ORIGIN')],
  ['an Origin with userinfo: 403', () => expectRefusal(upgrade({ Origin: 'https://user@allowed.example', ...bearer(harness.token('a')) }), 403, 'FORBIDDEN_ORIGIN')],
  ['an Origin with a path: 403', () => expectRefusal(upgrade({ Origin: `${ALLOWED_ORIGIN}/x`, ...bearer(harness.token('a')) }), 403, 'FORBIDDEN_ORIGIN')],
  ['the allowed Origin in capitals with its default port: accepted', () => expectUpgrade(upgrade({ Origin: 'HTTPS://ALLOWED.EXAMPLE:443', ...bearer(harness.token('a')) }))],
  ['a cookie session without an Origin: 403', () => expectRefusal(upgrade({ Cookie: `token=${harness.token('a')}` }), 403, 'FORBIDDEN_ORIGIN')],
  ['a cookie session with the allowed Origin: accepted', () => expectUpgrade(upgrade({ Cookie: `token=${harness.token('a')}`, Origin: ALLOWED_ORIGIN }))],
  ['2,000 headers: Node keeps the first 1,000, the handshake is judged on them and accepted', () =>
    expectUpgrade(upgrade(bearer(harness.token('a')), { extra: Array.from({ length: 2000 }, (_, i) => `X-H${i}: v\r\n`).join('') }))],
  ['4,000 headers: 431 from Node', () =>
    expectRefusal(upgrade(bearer(harness.token('a')), { extra: Array.from({ length: 4000 }, (_, i) => `X-H${i}: v\r\n`).join('') }), 431)],
  ['a huge Sec-WebSocket-Protocol with repeated entries: 400 from ws, no socket', () =>
    expectRefusal(upgrade({ ...bearer(harness.token('a')), 'Sec-WebSocket-Protocol': Array.from({ length: 1500 }, () => 'p').join(', ') }), 400)],
  ['Sec-WebSocket-Version: 12: 400 from ws', () => expectRefusal(upgrade({ ...bearer(harness.token('a')), 'Sec-WebSocket-Version': '12' }), 400)],
  ['a Sec-WebSocket-Key that is not 16 bytes: 400 from ws', () => expectRefusal(upgrade({ ...bearer(harness.token('a')), 'Sec-WebSocket-Key': 'c2hvcnQ=' }), 400)],
  ['a plain GET with a valid token: 426 UPGRADE_REQUIRED', () => expectRefusal(upgrade(bearer(harness.token('a')), { upgrade: false }), 426, 'UPGRADE_REQUIRED')],
  ['?token= in the query: accepted, and the token is in no log line', async () => {
    const token = harness.token('q')
    await expectUpgrade(upgrade({}, { path: `/rt?x=1&token=${token}` }))
    assert.ok(harness.logs.some((l) => l.includes('/rt?x=1')), 'the request was logged, without the token')
  }],
  // Other spellings of the route's path, and of the query key: the token never reaches a log line (checked by the harness).
  ['?token= on /RT, //rt, /r%74 and with %74oken=: refused or served, never logged', async () => {
    for (const path of ['/RT', '//rt', '/r%74', '/rt/', '/r%54']) {
      const res = await rawRequest(harness.h.port, upgrade({}, { path: `${path}?token=${harness.token('spelled')}` }))
      assert.ok([101, 401, 404].includes(res.status), `${path}: ${res.status}`)
    }
    assert.equal((await rawRequest(harness.h.port, upgrade({}, { path: `/rt?%74oken=${harness.token('escaped')}` }))).status, 101)
  }],
  // Browsers and ws fail a socket whose offer got no protocol back, and retry for ever: refused before the upgrade.
  ['only a bearer. protocol entry: 400 UNSUPPORTED_PROTOCOL, the token never echoed', async () => {
    const token = harness.token('p')
    const res = await rawRequest(harness.h.port, upgrade({ 'Sec-WebSocket-Protocol': `bearer.${token}` }))
    assert.equal(res.status, 400)
    assert.match(res.body, /UNSUPPORTED_PROTOCOL/)
    assert.ok(!res.body.includes(token))
  }]
]

for (const [name, run] of cases) {
  test(name, { timeout: 15000 }, async () => {
    const baseline = harness.snapshot()
    await run()
    await harness.check(baseline)
  })
}
