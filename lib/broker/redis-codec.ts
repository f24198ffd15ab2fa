import type { Delivery } from './types.js'

/**
 * A fan-out on the wire between instances: one version byte, the header's length (2 bytes), the header as JSON
 * (`{ f: publisher id, x?: except }`), then the frame's bytes exactly as the publisher encoded them.
 */
const VERSION = 1

export function encodeMessage (from: string, delivery: Delivery): Buffer {
  const header = Buffer.from(JSON.stringify(delivery.except === undefined ? { f: from } : { f: from, x: delivery.except }))
  const head = Buffer.allocUnsafe(3)
  head[0] = VERSION
  head.writeUInt16BE(header.length, 1)
  return Buffer.concat([head, header, delivery.frame])
}

export function decodeMessage (message: Buffer): { from: string, except: string | undefined, frame: Buffer } | undefined {
  if (message.length < 3 || message[0] !== VERSION) return undefined
  const length = message.readUInt16BE(1)
  try {
    const header = JSON.parse(message.subarray(3, 3 + length).toString()) as { f?: unknown, x?: unknown }
    if (typeof header.f !== 'string') return undefined
    return { from: header.f, except: typeof header.x === 'string' ? header.x : undefined, frame: message.subarray(3 + length) }
  } catch {
    return undefined
  }
}
