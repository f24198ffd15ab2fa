/** What a failed handshake means, learned from the server's answer to an ordinary GET of the same URL. */
export interface Verdict {
  /** false: stop reconnecting. */
  retry: boolean
  code: string | undefined
  status: number | undefined
  message: string
}

/**
 * Browsers hide the status of a refused upgrade, so the client asks the same URL over HTTP, the token in an
 * Authorization header, and reads the JSON `{ statusCode, code, message }` every refusal carries. A 426 means the
 * endpoint would have accepted the socket, so the failure was the network's; 401 and 403 are final (but
 * TOKEN_EXPIRED, which a new token mends); 429 and 5xx are worth another try.
 */
export async function diagnose (wsUrl: string, token: string | undefined, fetchFn: typeof fetch | undefined): Promise<Verdict> {
  if (fetchFn === undefined) return { retry: true, code: undefined, status: undefined, message: 'the connection failed' }
  const url = wsUrl.replace(/^ws(s?):/i, 'http$1:')
  let res: Response
  try {
    res = await fetchFn(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, credentials: 'same-origin' })
  } catch {
    return { retry: true, code: undefined, status: undefined, message: 'the server could not be reached' }
  }
  let body: { code?: unknown, message?: unknown } = {}
  try {
    body = await res.json() as typeof body
  } catch {}
  const code = typeof body.code === 'string' ? body.code : undefined
  const message = typeof body.message === 'string' ? body.message : `HTTP ${res.status}`
  if (res.status === 426) return { retry: true, code, status: res.status, message: 'the endpoint is up; the connection failed on the way' }
  if (res.status === 401 && code === 'TOKEN_EXPIRED') return { retry: true, code, status: res.status, message }
  if (res.status === 429 || res.status >= 500) return { retry: true, code, status: res.status, message }
  return { retry: false, code: code ?? `HTTP_${res.status}`, status: res.status, message }
}
