import { withQueryToken } from './socket.js'
import { deadline } from './timer.js'

/** What a failed handshake means, learned from the server's answer to an ordinary GET of the same URL. */
export interface Verdict {
  /** false: stop reconnecting. */
  retry: boolean
  code: string | undefined
  status: number | undefined
  message: string
  /**
   * The route would have taken the socket (426) and says it serves the HTTP-streaming fallback
   * (`X-Realtime-Fallback: stream`): the upgrade failed on the way, the stream is worth trying.
   */
  stream: boolean
}

export interface DiagnoseOptions {
  /** The token the connect attempt carried. */
  token: string | undefined
  /** Where the connect attempt put it; the query source gets it in the URL again (it may not read headers). */
  tokenSource: 'protocol' | 'query'
  /** With `getToken`, TOKEN_EXPIRED is worth another try. */
  canRenewToken: boolean
  fetch: typeof fetch | undefined
  /** The application subprotocol the connect attempt offered, repeated in `X-Realtime-Protocol`. */
  protocol?: string
  /** Aborts the request: `close()` and the timeout use it. */
  controller: AbortController
  timeout: number
}

/** The plugin's refusal codes that retrying cannot change (the token, the page's origin, what the route accepts). */
const FINAL: Readonly<Record<string, number>> = { INVALID_TOKEN: 401, MISSING_TOKEN: 401, TOKEN_EXPIRED: 401, FORBIDDEN_ORIGIN: 403, UNSUPPORTED_PROTOCOL: 400 }

const NETWORK: Verdict = { retry: true, code: undefined, status: undefined, message: 'the server could not be reached', stream: false }

/**
 * Browsers hide the status of a refused upgrade, so the client asks the same URL over HTTP (ws→http, wss→https),
 * the token in an Authorization header, and reads the JSON `{ statusCode, code, message }` every refusal carries.
 * A 426 means the endpoint would have accepted the socket, so the failure was the network's. Only the plugin's own
 * refusals that another try cannot change are final: its JSON body (`statusCode` equal to the status) with one of
 * FINAL's codes (TOKEN_EXPIRED only without `getToken`, which mends it). Everything else is worth another try with
 * backoff: 429 and 5xx, no answer at all, and any answer that is not the plugin's (an SPA's 200 page, a load
 * balancer's 404 or 502 during a deploy, a proxy's 403 page).
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
      headers: {
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
        ...(options.protocol === undefined ? {} : { 'x-realtime-protocol': options.protocol })
      },
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
  const { code: rawCode, message: rawMessage, statusCode } = (typeof body === 'object' && body !== null ? body : {}) as { code?: unknown, message?: unknown, statusCode?: unknown }
  const code = typeof rawCode === 'string' ? rawCode : undefined
  const message = typeof rawMessage === 'string' ? rawMessage : `HTTP ${res.status}`
  const verdict = { code, status: res.status, message, stream: false }
  if (res.status === 426) {
    return { retry: true, ...verdict, message: 'the endpoint is up; the connection failed on the way', stream: res.headers.get('x-realtime-fallback') === 'stream' }
  }
  const own = code !== undefined && statusCode === res.status && FINAL[code] === res.status
  if (!own) return { retry: true, ...verdict }
  if (code === 'TOKEN_EXPIRED') return { retry: options.canRenewToken, ...verdict }
  // The server did not look where this request carried the token (its sources may leave out the header): no verdict.
  if (code === 'MISSING_TOKEN' && token !== undefined) return { retry: true, ...verdict }
  return { retry: false, ...verdict }
}
