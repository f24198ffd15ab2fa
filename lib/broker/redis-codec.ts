import type { Delivery } from './types.js'

/**
 * A fan-out on the wire between instances: one version byte, the header's length (2 bytes), the header as JSON
 * (`{ f: publisher id, x?: except, t?: published at (ms since the epoch), y?: event type }`), then the frame's bytes
 * exactly as the publisher encoded them. `t` and `y` were added later within version 1: a reader ignores header
 * fields it does not know, so instances of both kinds share a channel. A header past 65535 bytes (an except or a
 * type that long: app strings) goes as version 5, its length in 4 bytes; version 1 could not carry it at all.
 */
const VERSION = 1
const VERSION_LONG = 5

interface Header { f: string, x?: string, t: number, y?: string }

export function encodeMessage (from: string, delivery: Delivery): Buffer {
  const fields: Header = { f: from, t: Date.now() }
  if (delivery.except !== undefined) fields.x = delivery.except
  if (delivery.type !== undefined) fields.y = delivery.type
  const header = Buffer.from(JSON.stringify(fields))
  const long = header.length > 0xffff
  const head = Buffer.allocUnsafe(long ? 5 : 3)
  head[0] = long ? VERSION_LONG : VERSION
  if (long) head.writeUInt32BE(header.length, 1)
  else head.writeUInt16BE(header.length, 1)
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
  const size = message[0] === VERSION ? 2 : message[0] === VERSION_LONG ? 4 : 0
  if (size === 0 || message.length < 1 + size) return undefined
  const start = 1 + size
  const length = size === 2 ? message.readUInt16BE(1) : message.readUInt32BE(1)
  if (start + length > message.length) return undefined
  try {
    const header = JSON.parse(message.subarray(start, start + length).toString()) as { f?: unknown, x?: unknown, t?: unknown, y?: unknown }
    if (typeof header.f !== 'string') return undefined
    return {
      from: header.f,
      except: typeof header.x === 'string' ? header.x : undefined,
      frame: message.subarray(start + length),
      type: typeof header.y === 'string' ? header.y : undefined,
      publishedAt: typeof header.t === 'number' && Number.isFinite(header.t) ? header.t : undefined
    }
  } catch {
    return undefined
  }
}

/** A history room's frame on pub/sub, as the append script of lib/history/redis.ts published it. */
export interface DecodedNumbered {
  epoch: string
  offset: number
  except: string | undefined
  frame: Buffer
  /** When the publisher appended it (ms since the epoch): the `\x02` format carries it, from this version on. */
  publishedAt?: number
}

/**
 * The first byte of a history room's frame, `\x04<epoch>:<offset>:<length>:<except><frame>`: the except's length
 * in bytes (as Lua's `string.len` counts them) and not a delimiter ends it, so any except string, `|` and `:`
 * included, comes back as it was and never spills into the frame. Epoch and offset never hold a `:` (base64url and
 * digits).
 */
export const NUMBERED = 4
/**
 * The previous format, `\x02<epoch>:<offset>:<except>|<frame>`: still sent when the except holds neither `|` nor
 * `:` (connection ids are UUIDs), so that instances not yet upgraded in a rolling deploy read those frames. It now
 * ends its head with `:<time>` (the publish time, ms since the epoch), a field those instances never split off.
 */
export const NUMBERED_V2 = 2

/** Parses the decimal digits of `message[from, to)`: a non-negative integer, or NaN. */
function digits (message: Buffer, from: number, to: number): number {
  if (to <= from || to - from > 15) return NaN
  let n = 0
  for (let i = from; i < to; i++) {
    const c = message[i] as number
    if (c < 0x30 || c > 0x39) return NaN
    n = n * 10 + c - 0x30
  }
  return n
}

export function decodeNumbered (message: Buffer): DecodedNumbered | undefined {
  if (message[0] === NUMBERED_V2) return decodeV2(message)
  if (message[0] !== NUMBERED) return undefined
  const a = message.indexOf(0x3a, 1)
  const b = a === -1 ? -1 : message.indexOf(0x3a, a + 1)
  const c = b === -1 ? -1 : message.indexOf(0x3a, b + 1)
  if (c === -1) return undefined
  const offset = digits(message, a + 1, b)
  const length = digits(message, b + 1, c)
  if (Number.isNaN(offset) || Number.isNaN(length) || c + 1 + length > message.length) return undefined
  return {
    epoch: message.subarray(1, a).toString(),
    offset,
    except: length === 0 ? undefined : message.subarray(c + 1, c + 1 + length).toString(),
    frame: message.subarray(c + 1 + length)
  }
}

function decodeV2 (message: Buffer): DecodedNumbered | undefined {
  const bar = message.indexOf(0x7c)
  if (bar === -1) return undefined
  const [epoch, offset, except, time] = message.subarray(1, bar).toString().split(':')
  if (epoch === undefined || offset === undefined) return undefined
  const decoded: DecodedNumbered = { epoch, offset: Number(offset), frame: message.subarray(bar + 1), except: except === '' || except === undefined ? undefined : except }
  const publishedAt = time === undefined || !/^\d{1,15}$/.test(time) ? undefined : Number(time)
  if (publishedAt !== undefined) decoded.publishedAt = publishedAt
  return decoded
}
