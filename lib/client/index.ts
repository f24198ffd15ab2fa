// fastify-realtime/client: the typed client. It imports nothing from Node's standard library and no server code
// (only types), so a bundler needs no polyfill.
export { createClient, RealtimeClient, type ClientOptions } from './client.js'
export { RealtimeClientError, ClientErrorCode, type ClientErrorCodeName } from './errors.js'
export { backoffDelay, shouldReconnect, type BackoffOptions } from './backoff.js'
export type { AnyRoute, MessageType, MessageData, ReplyData, EventType, EventData, LifecycleEvents, WebSocketLike, WebSocketConstructor } from './types.js'
