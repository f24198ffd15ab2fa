import { createHmac, sign as signWith, type KeyObject } from 'node:crypto'
import { SECRET } from './app.js'

/**
 * Signs any payload, even one a signing library refuses: an `exp` that is a string, `alg: none`, an HS256
 * signature made with an RSA public key (algorithm confusion).
 */
export function signRaw (payload: Record<string, unknown>, options: { alg?: 'HS256' | 'RS256' | 'none', key?: string | KeyObject } = {}): string {
  const alg = options.alg ?? 'HS256'
  const part = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const body = `${part({ alg, typ: 'JWT' })}.${part(payload)}`
  if (alg === 'none') return `${body}.`
  const key = options.key ?? SECRET
  const signature = alg === 'HS256'
    ? createHmac('sha256', key as string).update(body).digest('base64url')
    : signWith('sha256', Buffer.from(body), key as KeyObject).toString('base64url')
  return `${body}.${signature}`
}
