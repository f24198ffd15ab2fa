import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Type } from '@sinclair/typebox'
import { startApp } from './helpers/app.js'
import { connect } from './helpers/client.js'

test('smoke', { timeout: 10000 }, async (t) => {
  const h = await startApp({
    realtime: { auth: false },
    setup: (app) => {
      app.realtimeRoute({
        url: '/echo',
        messages: { echo: { schema: Type.Object({ text: Type.String() }), handler: ({ text }) => ({ text }) } }
      })
    }
  })
  t.after(() => h.close())
  const c = await connect(`${h.wsBase}/echo`)
  const r = await c.request('echo', { text: 'hi' })
  assert.deepEqual(r, { type: 'reply', id: 1, data: { text: 'hi' } })
  await c.close()
})
