// One simulated instance in a child process (for schedules that SIGKILL instances): starts the app from the JSON
// config in argv, then answers the simulator's requests over IPC: { id, op, args } → { id, result }.
import { opsOf, startSimApp, type InstanceConfig } from './app.js'

const config = JSON.parse(process.argv[2] as string) as InstanceConfig
const app = await startSimApp(config)
const ops = opsOf(app) as unknown as Record<string, (...args: unknown[]) => unknown>
process.on('message', (message: { id: number, op: string, args: unknown[] }) => {
  Promise.resolve()
    .then(async () => await ops[message.op]?.(...message.args))
    .then((result) => { process.send?.({ id: message.id, result }) }, (err: unknown) => { process.send?.({ id: message.id, error: String(err) }) })
    .finally(() => { if (message.op === 'close') setTimeout(() => { process.exit(0) }, 50) })
})
process.on('disconnect', () => { process.exit(0) })
process.send?.({ ready: true })
