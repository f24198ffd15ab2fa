import type { WebSocketLike } from './types.js'

/**
 * Where and how to open the socket: the token as a `bearer.<token>` subprotocol entry before the application's
 * protocol (the server selects the latter and never echoes the token), or in the query for the `query` source.
 * Without a token only the application's protocol is offered.
 */
export function handshakeOf (url: string, token: string | undefined, tokenSource: 'protocol' | 'query', protocol: string): { url: string, protocols: string[] } {
  if (token === undefined || token === '') return { url, protocols: [protocol] }
  if (tokenSource === 'query') return { url: withQueryToken(url, token), protocols: [protocol] }
  return { url, protocols: [`bearer.${token}`, protocol] }
}

/** `url` with `token=` set in its query. */
export function withQueryToken (url: string, token: string): string {
  const parsed = new URL(url)
  parsed.searchParams.set('token', token)
  return parsed.href
}

export interface SocketHandlers {
  open: () => void
  message: (data: unknown) => void
  close: (code: number, reason: string) => void
}

/** Listens to a socket; returns what stops listening. */
export function listen (ws: WebSocketLike, handlers: SocketHandlers): () => void {
  const onOpen = (): void => { handlers.open() }
  const onMessage = (event: { data: unknown }): void => { handlers.message(event.data) }
  const onClose = (event: { code: number, reason: string }): void => { handlers.close(event.code, event.reason) }
  ws.addEventListener('open', onOpen)
  ws.addEventListener('message', onMessage)
  ws.addEventListener('close', onClose)
  // Never removed: `ws` on Node throws an 'error' nobody listens to (a socket closed while connecting emits one).
  ws.addEventListener('error', () => {})
  return () => {
    ws.removeEventListener('open', onOpen)
    ws.removeEventListener('message', onMessage)
    ws.removeEventListener('close', onClose)
  }
}
