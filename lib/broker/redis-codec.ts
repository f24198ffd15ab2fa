import type { Delivery } from './types.js'

/**
 * A fan-out on the wire between instances: one version byte, the header's length (2 bytes), the header as JSON
 * (`{ f: publisher id, x?: except, t?: published at (ms since the epoch), y?: event type }`), then the frame's bytes
 * exactly as the publisher encoded them. `t` and `y` were added later within version 1: a reader ignores header
 * fields it does not know, so instances of both kinds share a channel.
 */
const VERSION = 1

interface Header { f: string, x?: string, t: number, y?: string }

export function encodeMessage (from: string, delivery: Delivery): Buffer {
  const fields: Header = { f: from, t: Date.now() }
  if (delivery.except !== undefined) fields.x = delivery.except
  if (delivery.type !== undefined) fields.y = delivery.type
  const header = Buffer.from(JSON.stringify(fields))
  const head = Buffer.allocUnsafe(3)
  head[0] = VERSION
  head.writeUInt16BE(header.length, 1)
  return Buffer.concat([head, header, delivery.frame])
}

export interface DecodedMessage {
  from: string
  except: string | undefined
  frame: Buffer
  type: string | undefined
  publishedAt: number | undefined
}

export function decodeMessage (message: Buffer): DecodedMessage | undefined {
  if (message.length < 3 || message[0] !== VERSION) return undefined
  const length = message.readUInt16BE(1)
  try {
    const header = JSON.parse(message.subarray(3, 3 + length).toString()) as { f?: unknown, x?: unknown, t?: unknown, y?: unknown }
    if (typeof header.f !== 'string') return undefined
    return {
      from: header.f,
      except: typeof header.x === 'string' ? header.x : undefined,
      frame: message.subarray(3 + length),
      type: typeof header.y === 'string' ? header.y : undefined,
      publishedAt: typeof header.t === 'number' && Number.isFinite(header.t) ? header.t : undefined
    }
  } catch {
    return undefined
  }
}
