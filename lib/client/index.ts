// fastify-realtime/client: the typed client. It imports nothing from Node's standard library and no server code
// (types only), so a bundler needs no polyfill; dist/client/realtime-client.js is the same, pre-bundled.
export { createClient, RealtimeClient, type ClientState } from './client.js'
export type { ClientOptions, RequestOptions } from './options.js'
export type { RoomPosition, RecoveryEvent } from './positions.js'
export type { PresenceView, PresenceEvents, PresenceMember } from './presence.js'
export { RealtimeClientError, ClientErrorCode, type ClientErrorCodeName } from './errors.js'
export { CloseCode, shouldReconnect, backoffDelay, type CloseCodeNumber, type BackoffOptions } from './reconnect.js'
export type {
  AnyRoute, MessageType, MessageData, ReplyData, WireResult, EventType, EventData, ListenerType, ListenerData,
  LifecycleEvent, LifecycleEvents, Transport, WebSocketLike, WebSocketConstructor
} from './types.js'
