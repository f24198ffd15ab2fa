// Opens N idle ws clients to a URL and keeps them until killed (they answer pings, as ws does by default).
import WebSocket from 'ws'

const [url, count] = process.argv.slice(2)
const sockets: WebSocket[] = []
for (let i = 0; i < Number(count); i++) {
  const ws = new WebSocket(url as string)
  ws.on('error', () => {})
  ws.on('close', (code) => { process.send?.({ closed: code }) })
  sockets.push(ws)
}
setTimeout(() => { process.exit(0) }, 60_000).unref()
process.on('disconnect', () => { process.exit(0) })
