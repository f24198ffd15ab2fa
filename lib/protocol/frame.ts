/**
 * A whole unmasked WebSocket text frame (RFC 6455 §5.2) around an encoded envelope: built once for a fan-out and
 * written as is to every member's socket, instead of ws framing the same bytes again for each one.
 */
export function textFrame (payload: Buffer): Buffer {
  const frame = frameOf(payload.length)
  payload.copy(frame, frame.length - payload.length)
  return frame
}

/**
 * The same frame around a string of `bytes` UTF-8 bytes, encoded straight into it: one buffer and one write for a
 * reply, where ws's own send makes a buffer of the text, a header and two writes.
 */
export function textFrameOf (text: string, bytes: number): Buffer {
  const frame = frameOf(bytes)
  // The frame comes from allocUnsafe: a count larger than the text's (a caller's mistake) must never send the
  // uninitialized rest of it. Framed again at the text's own length then.
  if (frame.write(text, frame.length - bytes, bytes, 'utf8') !== bytes) return textFrameOf(text, Buffer.byteLength(text))
  return frame
}

/** A frame buffer of a payload of `length` bytes, its header written (FIN, text, no mask), its payload not yet. */
function frameOf (length: number): Buffer {
  const headerLength = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(headerLength + length)
  frame[0] = 0x81 // FIN + text
  if (length < 126) {
    frame[1] = length
  } else if (length < 65536) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeBigUInt64BE(BigInt(length), 2)
  }
  return frame
}
