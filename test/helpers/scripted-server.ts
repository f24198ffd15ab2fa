// A server whose every frame the test writes: a plain `ws` WebSocketServer on 127.0.0.1, port 0. The script sees
// each connection open and each frame the client sends (parsed), and answers with exact frames: accept then close
// with a code, drop a reply, send hostile offsets, stay silent. What the clients sent is kept in order.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'

/** One client connection as the script sees it. */
export interface ScriptedSocket {
  /** 0 for the first connection, 1 for the next… */
  readonly index: number
  /** The frames this connection sent, parsed (a frame that is not JSON is kept as its text). */
  readonly frames: any[]
  readonly ws: WebSocket
  /** The subprotocols the client offered (`bearer.<token>`, `realtime.v1`). */
  readonly protocols: string[]
  /** Sends an object as JSON, or a string as it is. */
  send: (frame: unknown) => void
  /** Answers a request frame with `{ type: 'reply', id, data }`. */
  reply: (request: { id?: unknown }, data: unknown) => void
  close: (code?: number, reason?: string) => void
}

export interface Script {
  /** A connection opened. */
  open?: (socket: ScriptedSocket) => void
  /** A frame arrived. Without a script: a ping is answered with a pong, a request with a null reply. */
  frame?: (socket: ScriptedSocket, frame: any) => void
}

/** Answers pings with pongs and requests with a null reply: what a script falls back on. */
export function answer (socket: ScriptedSocket, frame: any): void {
  if (frame?.type === 'ping') socket.send({ type: 'pong' })
  else if (frame?.id !== undefined) socket.reply(frame, null)
}

export class ScriptedServer {
  readonly sockets: ScriptedSocket[] = []
  /** Every frame of every connection in arrival order, with the connection's index. */
  readonly frames: Array<{ socket: number, frame: any }> = []

  private constructor (private readonly wss: WebSocketServer, readonly url: string) {}

  static async start (script: Script = {}): Promise<ScriptedServer> {
    // The application protocol is selected, never the `bearer.<token>` entry (as the plugin does).
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      handleProtocols: (protocols) => protocols.has('realtime.v1') ? 'realtime.v1' : false
    })
    await once(wss, 'listening')
    const server = new ScriptedServer(wss, `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/chat`)
    wss.on('connection', (ws, request) => {
      const socket: ScriptedSocket = {
        index: server.sockets.length,
        frames: [],
        ws,
        protocols: String(request.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter((p) => p !== ''),
        send: (frame) => { if (ws.readyState === ws.OPEN) ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame)) },
        reply: (request, data) => { socket.send({ type: 'reply', id: request.id, data }) },
        close: (code, reason) => { ws.close(code, reason) }
      }
      server.sockets.push(socket)
      ws.on('error', () => {})
      ws.on('message', (raw) => {
        let frame: any
        try {
          frame = JSON.parse(String(raw))
        } catch {
          frame = String(raw)
        }
        socket.frames.push(frame)
        server.frames.push({ socket: socket.index, frame })
        if (script.frame !== undefined) script.frame(socket, frame)
        else answer(socket, frame)
      })
      script.open?.(socket)
    })
    return server
  }

  /** The frames of every connection, without pings, as `type` or `type:data` when data is a string. */
  get sent (): string[] {
    return this.frames.filter(({ frame }) => frame?.type !== 'ping')
      .map(({ frame }) => typeof frame?.data === 'string' ? `${String(frame.type)}:${frame.data}` : String(frame?.type))
  }

  async stop (): Promise<void> {
    for (const client of this.wss.clients) client.terminate()
    await new Promise<void>((resolve) => { this.wss.close(() => { resolve() }) })
  }
}
