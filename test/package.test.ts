// What a user meets: the packed package (`npm pack`) installed into a fresh app with its peers, every ```ts block of
// the README and docs/ compiled with strict TypeScript (no skipLibCheck) and the runnable ones run with plain node,
// ES modules and CommonJS. How blocks are marked: test/helpers/snippets.ts.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { signRaw } from './helpers/jwt.js'
import { connect } from './helpers/client.js'
import { readmeBlock } from './helpers/readme.js'
import { PRELUDES, snippetFiles, type SnippetFile } from './helpers/snippets.js'

const run = promisify(execFile)
const root = fileURLToPath(new URL('../', import.meta.url))
const tsc = join(root, 'node_modules/typescript/bin/tsc')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
// The peers (and what the snippets import) at the versions this repository tests with.
const PEERS = ['fastify', '@fastify/jwt', '@sinclair/typebox', 'ws', '@types/node', 'ioredis', 'prom-client', 'close-with-grace', '@opentelemetry/api']

let app: string
let installed: string

before(async () => {
  if (!existsSync(join(root, 'dist/index.js')) || !existsSync(join(root, 'dist/client/realtime-client.js'))) {
    throw new Error('dist/ is missing: run `npm run build` first (`npm test` does)')
  }
  app = await mkdtemp(join(tmpdir(), 'fastify-realtime-consumer-'))
  // The build ran just before (npm test), so packing skips prepack's second build.
  const { stdout } = await run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', app], { cwd: root })
  const [{ filename }] = JSON.parse(stdout) as [{ filename: string }]
  const versions = await Promise.all(PEERS.map(async (name) => {
    const { version } = JSON.parse(await readFile(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }
    return `${name}@${version}`
  }))
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  await run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', `./${filename}`, ...versions], { cwd: app, timeout: 120_000 })
  installed = join(app, 'node_modules/fastify-realtime')
})
after(async () => { if (app !== undefined) await rm(app, { recursive: true, force: true }) })

/** Compiles files with the repository's TypeScript as a user's project would: strict, nodenext, no skipLibCheck. */
async function compile (cwd: string, files: string[]): Promise<void> {
  try {
    await run(process.execPath, [tsc, '--ignoreConfig', '--strict', '--module', 'nodenext', '--target', 'es2022', '--types', 'node', '--outDir', 'out', '--rootDir', '.', ...files], { cwd })
  } catch (err) {
    assert.fail(`tsc failed in ${cwd}:\n${(err as { stdout?: string }).stdout ?? String(err)}`)
  }
}

/** Runs a compiled file with plain node until it prints `pattern`; the child is killed when the test ends. */
async function startNode (file: string, env: Record<string, string>, pattern: RegExp, t: { after: (fn: () => void) => void }): Promise<RegExpExecArray> {
  const child = spawn(process.execPath, [file], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { child.kill() })
  return await new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => { reject(new Error(`no ${String(pattern)} within 20 s in: ${out}`)) }, 20_000)
    const onData = (chunk: Buffer): void => {
      out += chunk.toString()
      const m = pattern.exec(out)
      if (m !== null) { clearTimeout(timer); resolve(m) }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`exited with ${String(code)}: ${out}`)) })
  })
}

test('the package: a license, no install script, exports that resolve, source maps whose sources ship', { timeout: 150_000 }, async () => {
  const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8')) as { scripts?: Record<string, string>, license: string }
  assert.equal(manifest.license, 'MIT')
  assert.match(await readFile(join(installed, 'LICENSE'), 'utf8'), /^MIT License/)
  for (const script of ['preinstall', 'install', 'postinstall', 'prepare']) assert.equal(manifest.scripts?.[script], undefined, script)
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', `
    for (const entry of ['fastify-realtime', 'fastify-realtime/client', 'fastify-realtime/redis', 'fastify-realtime/client/bundle']) {
      const m = await import(entry)
      console.log(entry, Object.keys(m).length > 0)
    }`], { cwd: app })
  assert.equal(stdout, 'fastify-realtime true\nfastify-realtime/client true\nfastify-realtime/redis true\nfastify-realtime/client/bundle true\n')
  const maps = (await readdir(join(installed, 'dist'), { recursive: true })).filter((f) => f.endsWith('.js.map'))
  assert.ok(maps.length > 10)
  for (const map of maps) {
    const { sources } = JSON.parse(await readFile(join(installed, 'dist', map), 'utf8')) as { sources: string[] }
    for (const source of sources) assert.ok(existsSync(join(installed, 'dist', map, '..', source)), `${map} → ${source}`)
  }
})

/**
 * The declarations an app compiles through the entry points (the files `import … from './x.js'` reaches from each
 * entry's types) name no type whose shape changes between versions of a dependency the app picks: no ioredis type
 * (ioredis 6's declarations import `redis-errors`, which has none: a strict build fails with TS7016) and no
 * `TracingChannel<…>` (@types/node 24+ swapped its type parameters: TypeScript 7 with @types/node 26 failed).
 */
test('the public declarations reach neither ioredis\'s types nor @types/node\'s TracingChannel generics', { timeout: 30_000 }, async () => {
  const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8')) as { exports: Record<string, { types?: string } | string> }
  const entries = Object.values(manifest.exports).flatMap((e) => typeof e === 'object' && e.types !== undefined ? [join(installed, e.types)] : [])
  assert.ok(entries.length >= 4, 'the entries with types')
  const seen = new Set<string>()
  const queue = [...entries]
  while (queue.length > 0) {
    const file = queue.pop() as string
    if (seen.has(file)) continue
    seen.add(file)
    const text = await readFile(file, 'utf8')
    assert.doesNotMatch(text, /from ['"]ioredis['"]/, `${file} imports ioredis's types`)
    assert.doesNotMatch(text, /\bTracingChannel</, `${file} names TracingChannel's type parameters`)
    for (const [, spec] of text.matchAll(/(?:from|import\() ?['"](\.{1,2}\/[^'"]+)\.js['"]/g)) queue.push(join(file, '..', `${spec as string}.d.ts`))
  }
  assert.ok(seen.size > 10, `${seen.size} declaration files reached`)
})

let snippets: Promise<{ dir: string, files: SnippetFile[] }> | undefined
/**
 * Every ```ts block of the README and docs/ as a file of app/snippets/ (with the preludes, and the example's route
 * its client is typed from), compiled there in ONE tsc run; memoized, the tests below share it.
 */
async function compileSnippets (): Promise<{ dir: string, files: SnippetFile[] }> {
  snippets ??= (async () => {
    const dir = join(app, 'snippets')
    await mkdir(join(dir, 'example'), { recursive: true })
    const preludes = (await readdir(PRELUDES)).filter((f) => f.endsWith('.ts'))
    for (const f of preludes) await copyFile(new URL(f, PRELUDES), join(dir, f))
    const chatRoute = await readFile(join(root, 'example/chat-route.ts'), 'utf8')
    assert.ok(chatRoute.includes("from '../lib/index.js'"))
    await writeFile(join(dir, 'example/chat-route.ts'), chatRoute.replace("from '../lib/index.js'", "from 'fastify-realtime'"))
    const files = await snippetFiles(new URL('../', import.meta.url))
    for (const file of files) await writeFile(join(dir, file.name), file.source)
    await compile(dir, [...preludes, 'example/chat-route.ts', ...files.map((f) => f.name)])
    return { dir, files }
  })()
  return await snippets
}

test('every ```ts block of the README and docs/ compiles strictly against the package; the runnable ones exit 0 with plain node', { timeout: 150_000 }, async () => {
  const { dir, files } = await compileSnippets()
  assert.ok(files.length >= 15, `${files.length} blocks`)
  assert.equal(new Set(files.map((f) => f.name)).size, files.length, 'every block has a file name of its own')
  const runnable = files.filter((f) => f.block.marker?.run === true)
  assert.ok(runnable.length >= 3, 'some blocks are run')
  for (const { name, block } of runnable) {
    try {
      await run(process.execPath, [join('out', name.replace(/\.ts$/, '.js'))], { cwd: dir, timeout: 20_000 })
    } catch (err) {
      assert.fail(`${block.page}:${block.line} (${name}) did not exit 0 within 20 s:\n${String(err)}`)
    }
  }
})

test('the README\'s quick start and client snippet compile strictly and run with plain node', { timeout: 150_000 }, async (t) => {
  const { dir, files } = await compileSnippets()
  assert.equal(files.find((f) => f.name === 'quickstart.ts')?.block.code, await readmeBlock('## Quick start'))
  assert.equal(files.find((f) => f.name === 'client.ts')?.block.code, await readmeBlock('### A client'))

  // The quick start, as compiled, with node.
  const secret = 'package-test-secret-package-test-secret'
  const [, port] = await startNode(join(dir, 'out/quickstart.js'), { PORT: '0', JWT_SECRET: secret }, /listening at http:\/\/(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)/, t)
  const c = await connect(`ws://localhost:${port}/chat`, { headers: { authorization: `Bearer ${signRaw({ sub: 'alice' }, { key: secret })}` } })
  t.after(() => { c.destroy() })
  assert.deepEqual(await c.request('room.join', { room: 'lobby' }), { type: 'reply', id: 1, data: { joined: 'lobby' } })
  c.sendJson({ type: 'chat.send', data: { room: 'lobby', text: 'hello' } })
  assert.deepEqual(await c.nextMessage(), { type: 'chat.message', data: { from: 'alice', text: 'hello' } })

  // The README's client, as compiled, with node, against it.
  const client = join(dir, 'out/client.js')
  await writeFile(client, (await readFile(client, 'utf8')).replaceAll('127.0.0.1:3000', `127.0.0.1:${port as string}`))
  const { stdout } = await run(process.execPath, [client], { cwd: dir, timeout: 20_000, env: { ...process.env, TOKEN: signRaw({ sub: 'node' }, { key: secret }) } })
  assert.equal(stdout, 'node: hello\n')

  // Getting started's example client, as compiled, with node, against the example.
  const { buildExample } = await import('../example/app.js')
  const example = await buildExample({ logger: false })
  const examplePort = await example.listen(0)
  t.after(() => example.app.close())
  const exampleClient = join(dir, 'out/example-client.js')
  await writeFile(exampleClient, (await readFile(exampleClient, 'utf8')).replaceAll('127.0.0.1:3000', `127.0.0.1:${examplePort}`))
  const exampleRun = await run(process.execPath, [exampleClient], { cwd: dir, timeout: 20_000 })
  assert.equal(exampleRun.stdout, 'node: hello, 1 here\n')
})

/** A CommonJS TypeScript app (its package.json says so): `import` compiles to `require()` of the ES module. */
const COMMONJS_APP = `
  import Fastify from 'fastify'
  import { Type } from '@sinclair/typebox'
  import realtime from 'fastify-realtime'
  import { createClient } from 'fastify-realtime/client'
  async function main (): Promise<void> {
    const app = Fastify()
    await app.register(realtime, { auth: false })
    const route = app.realtimeRoute({ url: '/rt', messages: { echo: { schema: Type.String(), handler: (text) => text.toUpperCase() } }, events: { said: Type.String() } })
    route.broadcast('said', 'typed')
    await app.ready()
    console.log('typescript', app.hasRoute({ method: 'GET', url: '/rt' }), typeof createClient<typeof route>)
    await app.close()
  }
  void main()
`

/**
 * The versions an app may pick: the oldest TypeScript fastify 5 compiles with (5.4: NoInfer) with @types/node 20 and
 * ioredis 5, TypeScript 6.0 with the latest @types/node, and the latest TypeScript with the latest @types/node and
 * ioredis 6. The quick start, its client and a file using every entry compile strictly, without skipLibCheck, against each; a
 * CommonJS TypeScript file too from 5.8 on (the first to let `module: nodenext` require an ES module).
 */
const MATRIX: Array<{ versions: string[], commonjs: boolean }> = [
  { versions: ['typescript@5.4', '@types/node@20', 'ioredis@5'], commonjs: false },
  { versions: ['typescript@~6.0', '@types/node@latest', 'ioredis@5'], commonjs: true },
  { versions: ['typescript@latest', '@types/node@latest', 'ioredis@6'], commonjs: true }
]
for (const { versions, commonjs } of MATRIX) {
  test(`types compile with ${versions.join(', ')}`, { timeout: 240_000 }, async () => {
    const dir = join(app, `matrix-${versions[0]?.replace(/\W/g, '') ?? ''}`)
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'matrix', private: true, type: 'module' }))
    const tarball = (await readdir(app)).find((f) => f.endsWith('.tgz')) as string
    await run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', join(app, tarball), 'fastify@5', '@fastify/jwt@10',
      '@sinclair/typebox@0.34', 'ws@8', 'prom-client@15', ...versions], { cwd: dir, timeout: 180_000 })
    // The newcomer's path: the README's quick start and its client, beside a file using every entry.
    await writeFile(join(dir, 'quickstart.ts'), await readmeBlock('## Quick start'))
    await writeFile(join(dir, 'client.ts'), await readmeBlock('### A client'))
    await writeFile(join(dir, 'entries.ts'), [
      "import Fastify from 'fastify'",
      "import WebSocket from 'ws'",
      "import { Registry } from 'prom-client'",
      "import realtime, { type RealtimeOptions } from 'fastify-realtime'",
      "import { redisBroker } from 'fastify-realtime/redis'",
      "import { realtimeMetrics } from 'fastify-realtime/metrics'",
      "import { createClient } from 'fastify-realtime/client'",
      'const options: RealtimeOptions = { auth: false, broker: redisBroker({ url: \'redis://127.0.0.1:6379\' }), metrics: realtimeMetrics({ registry: new Registry() }) }',
      'const app = Fastify()',
      'await app.register(realtime, options)',
      "const echo = app.realtimeRoute({ url: '/echo', messages: {} })",
      "createClient<typeof echo>('ws://127.0.0.1:1/echo', { WebSocket }).close()"
    ].join('\n'))
    const files = ['quickstart.ts', 'client.ts', 'entries.ts']
    if (commonjs) {
      await mkdir(join(dir, 'cjs'), { recursive: true })
      await writeFile(join(dir, 'cjs/package.json'), JSON.stringify({ type: 'commonjs' }))
      await writeFile(join(dir, 'cjs/app.ts'), COMMONJS_APP)
      files.push('cjs/app.ts')
    }
    try {
      await run(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '--strict', '--module', 'nodenext', '--target', 'es2022', '--types', 'node',
        '--noEmit', ...files], { cwd: dir })
    } catch (err) {
      assert.fail(`tsc (${versions.join(', ')}) failed:\n${(err as { stdout?: string }).stdout ?? String(err)}`)
    }
  })
}

test('CommonJS: require() of every entry, and a CommonJS TypeScript project', { timeout: 150_000 }, async () => {
  const dir = join(app, 'cjs')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'commonjs' }))
  await writeFile(join(dir, 'plain.cjs'), `
    const { realtime } = require('fastify-realtime')
    const { createClient } = require('fastify-realtime/client')
    const { redisBroker } = require('fastify-realtime/redis')
    const Fastify = require('fastify')
    const app = Fastify()
    app.register(realtime, { auth: false }).after(() => { app.realtimeRoute({ url: '/rt', messages: {} }) })
    app.ready().then(() => { console.log('plain', typeof createClient, typeof redisBroker, app.hasRoute({ method: 'GET', url: '/rt' })); return app.close() })
  `)
  await writeFile(join(dir, 'app.ts'), COMMONJS_APP)
  const plain = await run(process.execPath, ['plain.cjs'], { cwd: dir, timeout: 20_000 })
  assert.equal(plain.stdout, 'plain function function true\n')
  await compile(dir, ['app.ts'])
  const typescript = await run(process.execPath, ['out/app.js'], { cwd: dir, timeout: 20_000 })
  assert.equal(typescript.stdout, 'typescript true function\n')
})
