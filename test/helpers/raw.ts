import net from 'node:net'
import { randomBytes } from 'node:crypto'

/** Builds one WebSocket frame byte by byte, including the malformed ones a real client never sends. */
export function frame (opcode: number, payload: Buffer | string = Buffer.alloc(0), options: { fin?: boolean, rsv?: number, mask?: boolean, length?: bigint } = {}): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const { fin = true, rsv = 0, mask = true } = options
  const length = options.length ?? BigInt(data.length)
  const head: number[] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
  const maskBit = mask ? 0x80 : 0
  if (length < 126n) head.push(maskBit | Number(length))
  else if (length < 65536n) head.push(maskBit | 126, Number(length >> 8n) & 0xff, Number(length) & 0xff)
  else {
    head.push(maskBit | 127)
    for (let i = 7; i >= 0; i--) head.push(Number((length >> BigInt(i * 8)) & 0xffn))
  }
  if (!mask) return Buffer.concat([Buffer.from(head), data])
  const key = randomBytes(4)
  const masked = Buffer.from(data)
  for (let i = 0; i < masked.length; i++) masked[i] = (masked[i] as number) ^ (key[i % 4] as number)
  return Buffer.concat([Buffer.from(head), key, masked])
}

export const Op = { CONTINUATION: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 } as const

/** A close frame's payload: the code, then the reason. */
export function closePayload (code: number, reason = ''): Buffer {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason))
  b.writeUInt16BE(code, 0)
  b.write(reason, 2)
  return b
}

export interface ServerFrame { opcode: number, payload: Buffer }

/** A WebSocket client on a bare TCP socket: it sends whatever bytes a test gives it and parses what comes back. */
export class RawClient {
  readonly socket: net.Socket
  readonly frames: ServerFrame[] = []
  /** Resolves when the TCP connection has ended, with the close code of the server's close frame, if any. */
  readonly ended: Promise<number | undefined>
  private buffer = Buffer.alloc(0)
  private waiters: Array<() => void> = []

  private constructor (socket: net.Socket, rest: Buffer) {
    this.socket = socket
    socket.on('data', (chunk) => { this.push(chunk) })
    this.ended = new Promise((resolve) => {
      socket.on('close', () => {
        const close = this.frames.find((f) => f.opcode === Op.CLOSE)
        resolve(close !== undefined && close.payload.length >= 2 ? close.payload.readUInt16BE(0) : undefined)
        this.wake()
      })
    })
    socket.on('error', () => {})
    if (rest.length > 0) this.push(rest)
  }

  /** Upgrades a fresh TCP connection; resolves with the client, or rejects with the HTTP status line. */
  static async open (port: number, path: string, headers: Record<string, string> = {}): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1')
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    const lines = [`GET ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: Upgrade', 'Upgrade: websocket',
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`, 'Sec-WebSocket-Version: 13',
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)]
    socket.write(lines.join('\r\n') + '\r\n\r\n')
    const response = await readHead(socket)
    if (!response.head.startsWith('HTTP/1.1 101')) {
      socket.destroy()
      throw Object.assign(new Error(response.head.split('\r\n')[0]), { status: Number(response.head.split(' ')[1]) })
    }
    return new RawClient(socket, response.rest)
  }

  send (bytes: Buffer): void {
    this.socket.write(bytes)
  }

  /** The next data frame the server sent, as text. */
  async nextText (timeout = 3000): Promise<string> {
    const f = await this.nextFrame((x) => x.opcode === Op.TEXT, timeout)
    return f.payload.toString()
  }

  async nextFrame (match: (f: ServerFrame) => boolean, timeout = 3000): Promise<ServerFrame> {
    const deadline = Date.now() + timeout
    for (;;) {
      const i = this.frames.findIndex(match)
      if (i !== -1) return this.frames.splice(i, 1)[0] as ServerFrame
      if (this.socket.destroyed || Date.now() > deadline) throw new Error('no such frame')
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()))
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  destroy (): void {
    this.socket.destroy()
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  private push (chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk])
    for (;;) {
      if (this.buffer.length < 2) break
      const b1 = this.buffer[1] as number
      let length = b1 & 0x7f
      let offset = 2
      if (length === 126) {
        if (this.buffer.length < 4) break
        length = this.buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (this.buffer.length < 10) break
        length = Number(this.buffer.readBigUInt64BE(2))
        offset = 10
      }
      if (this.buffer.length < offset + length) break
      this.frames.push({ opcode: (this.buffer[0] as number) & 0x0f, payload: this.buffer.subarray(offset, offset + length) })
      this.buffer = this.buffer.subarray(offset + length)
    }
    this.wake()
  }
}

/** Reads an HTTP response head (or a raw request's answer) from a socket. */
export async function readHead (socket: net.Socket, timeout = 3000): Promise<{ head: string, rest: Buffer }> {
  return await new Promise((resolve, reject) => {
    let data = Buffer.alloc(0)
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no HTTP response in ${timeout} ms: ${data.toString()}`)) }, timeout)
    const onData = (chunk: Buffer): void => {
      data = Buffer.concat([data, chunk])
      const end = data.indexOf('\r\n\r\n')
      if (end !== -1) { cleanup(); resolve({ head: data.subarray(0, end).toString(), rest: data.subarray(end + 4) }) }
    }
    const onClose = (): void => { cleanup(); resolve({ head: data.toString(), rest: Buffer.alloc(0) }) }
    const cleanup = (): void => { clearTimeout(timer); socket.off('data', onData); socket.off('close', onClose) }
    socket.on('data', onData)
    socket.on('close', onClose)
  })
}

/** Sends raw HTTP request bytes and returns the status code and body (the connection is then closed). */
export async function rawRequest (port: number, bytes: string | Buffer): Promise<{ status: number, body: string }> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.write(bytes)
  let data = ''
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 3000)
    socket.on('data', (chunk) => {
      data += chunk.toString()
      const end = data.indexOf('\r\n\r\n')
      const length = /content-length: (\d+)/i.exec(data)
      if (end !== -1 && (length === null || data.length >= end + 4 + Number(length[1]))) { clearTimeout(timer); resolve() }
    })
    socket.on('close', () => { clearTimeout(timer); resolve() })
  })
  socket.destroy()
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(data)?.[1] ?? 0)
  return { status, body: data.slice(data.indexOf('\r\n\r\n') + 4) }
}
