// `npm test`'s test step: finds or starts one Redis for the whole run (test/helpers/redis-server.ts says in which
// order), hands it to every test file as REDIS_URL, runs node:test over the suites, and stops that Redis afterwards.
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { provideRedis } from '../test/helpers/redis-server.js'

// test/*.test.ts and test/hardening/*.test.ts (Node 20's runner does not expand globs itself).
const SUITES = ['test', 'test/hardening'].flatMap((dir) => readdirSync(dir).filter((f) => f.endsWith('.test.ts')).sort().map((f) => `${dir}/${f}`))

const redis = await provideRedis()
const env = { ...process.env }
if (redis.url !== undefined) env.REDIS_URL = redis.url
else process.stderr.write(`\n*** The Redis tests will be SKIPPED: ${redis.skip} ***\n\n`)

// Node 20 applies --test-timeout to each file as a whole too: it must exceed the longest file (test/package.test.ts
// packs and installs three times, ~40 s alone and over 120 s on a loaded machine); each test bounds itself.
const args = process.argv.slice(2)
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=300000', ...(args.length > 0 ? args : SUITES)], { stdio: 'inherit', env })
const code = await new Promise<number>((resolve) => {
  child.on('exit', (status, signal) => { resolve(status ?? (signal !== null ? 1 : 0)) })
})
await redis.stop()
if (redis.skip !== undefined) process.stderr.write(`\n*** The Redis tests were SKIPPED: ${redis.skip} ***\n`)
process.exitCode = code
