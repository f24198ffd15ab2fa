// A server under a low file-descriptor limit (the parent runs it with `ulimit -n`): it reports its port and, when
// asked, how many connections it holds, and exits when its parent goes.
import { Type } from '@sinclair/typebox'
import { startApp } from '../helpers/app.js'

const faults: string[] = []
process.on('uncaughtException', (err) => { faults.push(String(err.stack)); process.send?.({ fault: String(err.stack) }) })
const h = await startApp({
  realtime: { auth: false },
  setup: (app) => { app.realtimeRoute({ url: '/rt', messages: { echo: { schema: Type.Any(), handler: (d: unknown) => d } } }) }
})
process.send?.({ port: h.port })
process.on('message', () => { process.send?.({ connections: h.app.realtime.connections.size, faults }) })
process.on('disconnect', () => { h.close().finally(() => process.exit(0)) })
