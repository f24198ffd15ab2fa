import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'

test('app.close() with 500 open connections: 1001 to all, resolves within the timeout, the process exits by itself', { timeout: 60000 }, async () => {
  const timeout = 2000
  const child = fork(new URL('./helpers/shutdown-child.ts', import.meta.url), ['500', String(timeout)], { execArgv: ['--import', 'tsx'], stdio: 'inherit' })
  let report: any
  child.on('message', (m) => { report = m })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  const killer = setTimeout(() => { child.kill('SIGKILL') }, 45000)
  const code = await exited
  clearTimeout(killer)
  assert.equal(code, 0, 'the child exited by itself, nothing kept it alive')
  assert.ok(report, 'the child reported')
  assert.deepEqual(report.codes, { 1001: 499 })
  assert.deepEqual(report.lastWords, { type: 'last', data: { words: 'flushed before the close frame' } })
  assert.equal(report.open, 0)
  assert.ok(report.took >= timeout - 100 && report.took < timeout + 2000, `app.close() took ${report.took} ms`)
})
