import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { docsPage } from './helpers/readme.js'
import { BatchCode, CloseCode, CloseReason, ErrorCode, HandshakeCode } from '../lib/index.js'

// The tables live in docs/14-reference.md.
const reference = await docsPage('reference')

/** The first cells of the table under a heading. */
function tableColumn (heading: string, column = 0): string[] {
  const start = reference.indexOf(`\n${heading}\n`)
  assert.notEqual(start, -1, `the reference has "${heading}"`)
  const rows = reference.slice(start).split('\n').slice(1)
  const out: string[] = []
  let inTable = false
  for (const row of rows) {
    if (row.startsWith('|')) {
      inTable = true
      const cell = row.split('|')[column + 1]?.trim() ?? ''
      if (!/^-+$/.test(cell)) out.push(cell.replace(/`/g, ''))
    } else if (inTable) break
  }
  return out.slice(1)
}

test('the reference\'s error codes are exactly the exported ones', () => {
  assert.deepEqual(tableColumn('### Error codes').filter((c) => c !== 'your own').sort(), Object.values(ErrorCode).sort())
})

test('the reference\'s close codes are exactly the exported ones, with their names', () => {
  const numbers: number[] = tableColumn('### Close codes').map(Number)
  const names = tableColumn('### Close codes', 1)
  assert.deepEqual(numbers, Object.values(CloseCode) as number[])
  assert.deepEqual(names, Object.keys(CloseCode))
  for (const code of Object.keys(CloseReason)) assert.ok(numbers.includes(Number(code)))
})

test('the reference\'s handshake refusals are exactly the exported ones, with their statuses', () => {
  const codes = tableColumn('### Handshake refusals', 1)
  const statuses = tableColumn('### Handshake refusals', 0).map(Number)
  assert.deepEqual([...codes].sort(), Object.keys(HandshakeCode).sort())
  codes.forEach((code, i) => { assert.equal(HandshakeCode[code as keyof typeof HandshakeCode].statusCode, statuses[i], code) })
})

test('the reference lists every batch refusal with its status', async () => {
  const codes = tableColumn('### Batch refusals', 1)
  const statuses = tableColumn('### Batch refusals', 0).map(Number)
  assert.deepEqual([...codes].sort(), Object.keys(BatchCode).sort())
  codes.forEach((code, i) => { assert.equal(BatchCode[code as keyof typeof BatchCode].statusCode, statuses[i], code) })
})

test('the reference documents every option', async () => {
  const documented = new Set(tableColumn('## Options'))
  const source = await readFile(new URL('../lib/options.ts', import.meta.url), 'utf8')
  const block = (name: string) => source.slice(source.indexOf(`export interface ${name} {`), source.indexOf('\n}\n', source.indexOf(`export interface ${name} {`)))
  const keys = (name: string) => [...block(name).matchAll(/^ {2}(\w+)\?:/gm)].map((m) => m[1])
  for (const key of keys('RealtimeOptions')) {
    const prefixed = [...documented].some((d) => d === key || d.startsWith(`${key}.`))
    assert.ok(prefixed, `option ${key as string} is in the reference`)
  }
  for (const key of keys('AuthOptions')) assert.ok(documented.has(`auth.${key as string}`), `auth.${key as string}`)
  for (const key of keys('LimitsOptions')) assert.ok(documented.has(`limits.${key as string}`), `limits.${key as string}`)
})
