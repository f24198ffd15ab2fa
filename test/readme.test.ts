// The README's quick start and its client, and the example client of docs/01-getting-started.md, run as written
// (with tsx, inside the repository); test/package.test.ts compiles them against the packed package.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { gzipSync } from 'node:zlib'
import { signRaw } from './helpers/jwt.js'
import { connect } from './helpers/client.js'
import { docBlock, docsFiles, readmeBlock } from './helpers/readme.js'

const root = new URL('../', import.meta.url)
const secret = 'readme-test-secret-readme-test-secret'

/** Writes `code` to test/artifacts/ (inside the repository, so that `fastify-realtime` resolves to this package). */
async function artifact (name: string, code: string, t: TestContext): Promise<URL> {
  const dir = new URL('test/artifacts/', root)
  await mkdir(dir, { recursive: true })
  const file = new URL(`${name}-${process.pid}.ts`, dir)
  await writeFile(file, code)
  t.after(() => rm(file, { force: true }))
  return file
}

/** Runs the README's quick start with tsx on a free port; resolves with the port once it listens. */
async function startQuickstart (t: TestContext): Promise<{ port: number, file: URL }> {
  const file = await artifact('quickstart', await readmeBlock('## Quick start'), t)
  const child = spawn(process.execPath, ['--import', 'tsx', file.pathname], {
    env: { ...process.env, PORT: '0', JWT_SECRET: secret },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.after(() => { child.kill() })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => { reject(new Error(`no listening line in: ${out}`)) }, 30000)
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const m = /listening at http:\/\/(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)/.exec(out)
      if (m !== null) { clearTimeout(timer); resolve(Number(m[1])) }
    })
    child.on('exit', (codeNumber) => { reject(new Error(`exited with ${String(codeNumber)}: ${out}`)) })
  })
  return { port, file }
}

/** Runs a client snippet with tsx until it exits; resolves with its stdout and exit code. */
async function runClient (file: URL, env: Record<string, string>, t: TestContext): Promise<{ out: string, exitCode: unknown }> {
  const child = spawn(process.execPath, ['--import', 'tsx', file.pathname], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => { child.kill() })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const exitCode = await new Promise((resolve) => child.on('exit', resolve))
  return { out, exitCode }
}

test('the README\'s quick start runs as written', { timeout: 60000 }, async (t) => {
  const code = await readmeBlock('## Quick start')
  assert.ok(code.split('\n').length <= 25, 'the quick start is 25 lines or fewer')
  const { port, file } = await startQuickstart(t)
  // It type-checks, strict, as a user's file would.
  const tsc = spawn(process.execPath, [new URL('node_modules/typescript/bin/tsc', root).pathname, '--ignoreConfig', '--noEmit', '--strict', '--skipLibCheck',
    '--module', 'nodenext', '--target', 'es2022', '--types', 'node', file.pathname], { stdio: ['ignore', 'pipe', 'pipe'] })
  let diagnostics = ''
  tsc.stdout.on('data', (chunk: Buffer) => { diagnostics += chunk.toString() })
  const tscCode = await new Promise((resolve) => tsc.on('exit', resolve))
  assert.equal(diagnostics, '')
  assert.equal(tscCode, 0)
  const token = signRaw({ sub: 'alice', iat: Math.floor(Date.now() / 1000) }, { key: secret })
  const c = await connect(`ws://localhost:${port}/chat`, { headers: { authorization: `Bearer ${token}` } })
  t.after(() => { c.destroy() })
  assert.deepEqual(await c.request('chat.send', { room: 'lobby', text: 'too early' }),
    { type: 'error', id: 1, error: { code: 'NOT_IN_ROOM', message: 'join the room first' } })
  assert.deepEqual(await c.request('room.join', { room: 'lobby' }), { type: 'reply', id: 2, data: { joined: 'lobby' } })
  c.sendJson({ type: 'chat.send', data: { room: 'lobby', text: 'hello' } })
  assert.deepEqual(await c.nextMessage(), { type: 'chat.message', data: { from: 'alice', text: 'hello' } })
})

test('the README\'s client runs against the quick start', { timeout: 60000 }, async (t) => {
  const { port } = await startQuickstart(t)
  const code = await readmeBlock('### A client')
  assert.ok(code.includes("from './quickstart.js'"), 'the client types itself from the quick start')
  const file = await artifact('client', code.replaceAll('127.0.0.1:3000', `127.0.0.1:${port}`), t)
  const { out, exitCode } = await runClient(file, { TOKEN: signRaw({ sub: 'node' }, { key: secret }) }, t)
  assert.equal(out, 'node: hello\n')
  assert.equal(exitCode, 0, 'the client closed and let the process exit')
})

test('the example client of Getting started runs against the example', { timeout: 60000 }, async (t) => {
  const { buildExample } = await import('../example/app.js')
  const example = await buildExample({ logger: false })
  const port = await example.listen(0)
  t.after(() => example.app.close())
  const code = await docBlock('getting-started', 'The same client from Node')
  const file = await artifact('example-client', code.replaceAll('127.0.0.1:3000', `127.0.0.1:${port}`).replace("'./example/", "'../../example/"), t)
  const { out, exitCode } = await runClient(file, {}, t)
  assert.equal(out, 'node: hello, 1 here\n')
  assert.equal(exitCode, 0, 'the client closed and let the process exit')
})

test('the client bundle\'s size in the README (and wherever the docs quote it) is the built one\'s (kB of 1000 bytes, within 0.3)', { timeout: 10000 }, async () => {
  const readme = await readFile(new URL('README.md', root), 'utf8')
  assert.match(readme, /[\d.]+ KB minified, [\d.]+ KB gzipped/, 'the README quotes the bundle\'s size')
  const docs = await Promise.all((await docsFiles()).map(async (f) => await readFile(new URL(f, root), 'utf8')))
  const bundle = await readFile(new URL('dist/client/realtime-client.js', root))
  const sizes = [bundle.length / 1000, gzipSync(bundle).length / 1000]
  for (const quoted of [readme, ...docs].flatMap((text) => [...text.matchAll(/([\d.]+) KB minified, ([\d.]+) KB gzipped/g)])) {
    for (const [i, size] of sizes.entries()) {
      const said = Number(quoted[i + 1])
      assert.ok(Math.abs(said - size) <= 0.3, `the docs say ${said} KB, the bundle is ${size.toFixed(1)} KB: update it`)
    }
  }
})
