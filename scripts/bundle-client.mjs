// Builds dist/client/realtime-client.js: the typed client as ONE minified ES module for a <script type="module">
// or a page without a bundler. Fails when anything outside lib/client, or anything from Node, would be bundled.
// Usage: node scripts/bundle-client.mjs [--outfile path]
import { build } from 'esbuild'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'
import { relative } from 'node:path'

const root = fileURLToPath(new URL('..', import.meta.url))
const flag = process.argv.indexOf('--outfile')
const outfile = flag === -1 ? `${root}dist/client/realtime-client.js` : process.argv[flag + 1]

const result = await build({
  entryPoints: [`${root}lib/client/index.ts`],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  legalComments: 'none',
  metafile: true,
  write: false,
  logLevel: 'warning'
})

const strays = Object.keys(result.metafile.inputs).filter((input) => !input.startsWith('lib/client/'))
const nodeImports = Object.values(result.metafile.inputs).flatMap((input) => input.imports)
  .filter((i) => i.path !== '<runtime>' && (i.external || i.path.startsWith('node:'))) // <runtime>: esbuild's own helpers
if (strays.length > 0 || nodeImports.length > 0) {
  console.error('the client bundle must hold lib/client only, and nothing from Node:', [...strays, ...nodeImports.map((i) => i.path)])
  process.exit(1)
}

const [file] = result.outputFiles
const { mkdir, writeFile } = await import('node:fs/promises')
await mkdir(new URL('.', `file://${file.path}`), { recursive: true })
await writeFile(file.path, file.contents)
const kb = (bytes) => `${(bytes / 1000).toFixed(1)} KB`
console.log(`${relative(process.cwd(), file.path)}: ${kb(file.contents.length)} minified, ${kb(gzipSync(file.contents).length)} gzipped`)
