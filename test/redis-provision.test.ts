// How the tests find a Redis (test/helpers/redis-server.ts): never a developer's own Redis when they can start one,
// a loud skip when there is none, and a failure instead under CI=true.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { answers, freePort, hasRedisServerBinary, provideRedis } from './helpers/redis-server.js'

const noBinary = { PATH: '/nonexistent' }

test('REDIS_URL wins over everything', { timeout: 5000 }, async () => {
  const provided = await provideRedis({ REDIS_URL: 'redis://example.invalid:1234' })
  assert.deepEqual([provided.url, provided.skip], ['redis://example.invalid:1234', undefined])
})

test('with redis-server on the PATH: a throw-away server on a free port, gone after stop()', { timeout: 15000, skip: hasRedisServerBinary() ? false : 'redis-server is not installed here' }, async () => {
  const provided = await provideRedis({ PATH: process.env.PATH })
  const port = Number(new URL(provided.url ?? '').port)
  assert.notEqual(port, 6379)
  assert.equal(await answers(port), true)
  await provided.stop()
  assert.equal(await answers(port), false)
})

test('without a binary and nothing answering: a loud skip, or a failure under CI=true', { timeout: 10000 }, async () => {
  const dead = await freePort()
  const skipped = await provideRedis(noBinary, dead)
  assert.equal(skipped.url, undefined)
  assert.match(skipped.skip ?? '', /redis-server is not on the PATH.*install redis-server \(apt-get install redis-server\) or set REDIS_URL/)
  await assert.rejects(provideRedis({ ...noBinary, CI: 'true' }, dead), /The Redis tests cannot run under CI=true: no Redis/)
})
