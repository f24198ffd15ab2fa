import { withQueryToken } from './socket.js'
import { deadline } from './timer.js'

/** What a failed handshake means, learned from the server's answer to an ordinary GET of the same URL. */
export interface Verdict {
  /** false: stop reconnecting. */
  retry: boolean
  code: string | undefined
  status: number | undefined
  message: string
}

export interface DiagnoseOptions {
  /** The token the connect attempt carried. */
  token: string | undefined
  /** Where the connect attempt put it; the query source gets it in the URL again (it may not read headers). */
  tokenSource: 'protocol' | 'query'
  /** With `getToken`, TOKEN_EXPIRED is worth another try. */
  canRenewToken: boolean
  fetch: typeof fetch | undefined
  /** Aborts the request: `close()` and the timeout use it. */
  controller: AbortController
  timeout: number
}

const NETWORK: Verdict = { retry: true, code: undefined, status: undefined, message: 'the server could not be reached' }

/**
 * Browsers hide the status of a refused upgrade, so the client asks the same URL over HTTP (ws→http, wss→https),
 * the token in an Authorization header, and reads the JSON `{ statusCode, code, message }` every refusal carries.
 * A 426 means the endpoint would have accepted the socket, so the failure was the network's; 401 and 403 are final
 * (but TOKEN_EXPIRED, which `getToken` mends); 429 and 5xx are worth another try, and so is no answer at all.
 */
export async function diagnose (wsUrl: string, options: DiagnoseOptions): Promise<Verdict> {
  const { token, fetch: fetchFn, controller } = options
  if (fetchFn === undefined) return { ...NETWORK, message: 'the connection failed' }
  let url = wsUrl.replace(/^ws(s?):/i, 'http$1:')
  if (token !== undefined && options.tokenSource === 'query') url = withQueryToken(url, token)
  const timer = deadline(options.timeout, () => { controller.abort() })
  let res: Response | undefined
  let body: unknown
  try {
    res = await fetchFn(url, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      credentials: 'same-origin',
      signal: controller.signal
    })
    body = await res.json()
  } catch {
    // No answer: the network (or CORS, for an endpoint on another origin). No JSON: a proxy's page; its status speaks.
  } finally {
    clearTimeout(timer)
  }
  if (res === undefined) return NETWORK
  const { code: rawCode, message: rawMessage } = (typeof body === 'object' && body !== null ? body : {}) as { code?: unknown, message?: unknown }
  const code = typeof rawCode === 'string' ? rawCode : undefined
  const message = typeof rawMessage === 'string' ? rawMessage : `HTTP ${res.status}`
  const verdict = { code, status: res.status, message }
  if (res.status === 426) return { retry: true, ...verdict, message: 'the endpoint is up; the connection failed on the way' }
  if (res.status === 401 && code === 'TOKEN_EXPIRED') return { retry: options.canRenewToken, ...verdict }
  // The server did not look where this request carried the token (its sources may leave out the header): no verdict.
  if (res.status === 401 && code === 'MISSING_TOKEN' && token !== undefined) return { retry: true, ...verdict }
  if (res.status === 429 || res.status >= 500) return { retry: true, ...verdict }
  return { retry: false, ...verdict, code: code ?? `HTTP_${res.status}` }
}
