// Clients of the multi-instance tests (the Redis broker on one Redis and on a cluster): members of rooms, what
// each received, and conditions polled across instances.
import type { TestContext } from 'node:test'
import type { TestApp } from './app.js'
import { connect, type TestClient } from './client.js'

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** A client of `user` (the `x-user` header) on instance `h`, in `room` if given; destroyed when the test ends. */
export async function member (t: TestContext, h: TestApp, user: string, room?: string): Promise<TestClient> {
  const c = await connect(`${h.wsBase}/rt`, { headers: { 'x-user': user } })
  t.after(() => { c.destroy() })
  if (room !== undefined) await c.request('join', room)
  return c
}

/** Everything a client received within `ms`, after what it already had: duplicates would show here. */
export async function drain (c: TestClient, ms = 150): Promise<unknown[]> {
  await sleep(ms)
  const out = []
  while (c.pending > 0) out.push(await c.nextMessage())
  return out
}

/** Polls an asynchronous condition every 20 ms. */
export async function eventually (predicate: () => Promise<boolean>, what: string, timeout = 3000): Promise<void> {
  const start = Date.now()
  while (!await predicate()) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}
