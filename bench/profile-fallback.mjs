// `node bench/profile-fallback.mjs <file.cpuprofile | dir> [messages]`: where a G echo profile of the fallback's
// server (`npm run bench -- --only=G-echo --profile=realtime-stream`) spends its time. It keeps the samples from the
// first batch handled (`realtimeBatch`) to the last, so start-up and the streams' opening are left out, and gives
// each sample to the first of these its stack shows (leaf first for the syscalls and the GC, then the callers): the
// write syscall, the read syscall, the garbage collector, the JWT check of each batch, the batch's body (read and
// JSON.parse), the SSE writes (StreamSocket.send: the event's text and Node's chunked encoding), the frames through
// the dispatcher (parse, validate, handler, reply); the rest to the nearest frame that says whose it is: lib/,
// Fastify (routing, hooks, reply), Node's HTTP (the request's parser, the response's headers), Node's other work
// (streams, net, ticks). Given the messages
// the profile saw (the run prints them), it also says µs per message.
import { readProfile } from './cpuprofile.mjs'

const [given, messagesText] = process.argv.slice(2)
const { file, profile, nodes, parents } = readProfile(given, 'node bench/profile-fallback.mjs <file.cpuprofile | dir> [messages]')

const stackOf = (id) => {
  const stack = []
  for (let at = id; at !== undefined; at = parents.get(at)) stack.push(nodes.get(at).callFrame)
  return stack
}
const has = (stack, test) => stack.some(test)
const named = (name) => (f) => f.functionName === name
const ours = (f) => f.url.includes('/lib/') && !f.url.includes('/node_modules/')

function owner (stack) {
  const leaf = stack[0]
  if (leaf.functionName === '(idle)' || leaf.functionName === '(program)') return undefined
  if (leaf.functionName === 'writev' || leaf.functionName === 'writeBuffer' || leaf.functionName === 'writeUtf8String' || leaf.functionName === 'writeLatin1String') return 'write syscall (kernel, libuv)'
  if (leaf.functionName === 'onStreamRead' || (leaf.url === '' && has(stack, named('onStreamRead')) && stack.length <= 2)) return 'read (libuv, onStreamRead)'
  if (leaf.functionName === '(garbage collector)') return 'garbage collector'
  if (has(stack, (f) => ours(f) && f.url.includes('/transport/stream') && f.functionName === 'send')) return 'SSE writes (event text, chunked encoding)'
  if (has(stack, named('handleFrame'))) return 'frames through the dispatcher (parse, validate, handler, reply)'
  if (has(stack, (f) => f.url.includes('fast-jwt') || f.url.includes('@fastify/jwt') || f.functionName === 'verifyToken' || f.functionName === 'checkSession')) return 'JWT check, per batch'
  if (has(stack, (f) => f.url.includes('content-type-parser'))) return 'batch body: read, JSON.parse'
  // The rest goes to the nearest frame that says whose it is.
  for (const f of stack) {
    if (ours(f)) return 'lib/, other (the batch route: admit, parse, take, ack)'
    if (f.url.includes('/node_modules/fastify/') || f.url.includes('find-my-way') || f.url.includes('avvio') || f.url.includes('fast-json-stringify')) return 'Fastify (routing, hooks, reply)'
    if (f.url.startsWith('node:_http') || f.functionName.startsWith('parserOn')) return 'Node HTTP (parser, headers, response)'
    if (f.url.startsWith('node:')) return 'Node, other (streams, net, ticks)'
  }
  return 'other'
}

const times = []
let t = profile.startTime
for (const delta of profile.timeDeltas) times.push(t += delta)
const inBatch = profile.samples.map((id) => has(stackOf(id), named('realtimeBatch')))
const first = inBatch.indexOf(true)
const last = inBatch.lastIndexOf(true)
if (first === -1) {
  process.stderr.write(`no batch in ${file}\n`)
  process.exit(2)
}
const spent = new Map()
let busy = 0
for (let i = first; i <= last; i++) {
  const who = owner(stackOf(profile.samples[i]))
  if (who === undefined) continue
  const delta = profile.timeDeltas[i]
  spent.set(who, (spent.get(who) ?? 0) + delta)
  busy += delta
}
const messages = messagesText === undefined ? undefined : Number(messagesText)
const perMessage = (us) => messages === undefined ? '' : ` | ${(us / messages).toFixed(2)}`
process.stdout.write(`${file}: ${((times[last] - times[first]) / 1e6).toFixed(1)} s from the first batch to the last, ${(busy / 1000).toFixed(0)} ms busy\n\n`)
process.stdout.write(`| who | ms | share of busy${messages === undefined ? '' : ' | µs/msg'} |\n| --- | ---: | ---: |${messages === undefined ? '' : ' ---: |'}\n`)
for (const [who, us] of [...spent].sort((a, b) => b[1] - a[1])) {
  process.stdout.write(`| ${who} | ${(us / 1000).toFixed(1)} | ${(100 * us / busy).toFixed(1)} %${perMessage(us)} |\n`)
}
