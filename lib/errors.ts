import createError from '@fastify/error'

/** Configuration errors, thrown at registration or at `app.ready()`; never seen by a client. */
export const RT_ERR_OPTIONS = createError('RT_ERR_OPTIONS', 'fastify-realtime: invalid option %s')
export const RT_ERR_ROUTE = createError('RT_ERR_ROUTE', 'fastify-realtime: route %s: %s')
export const RT_ERR_RESERVED_TYPE = createError('RT_ERR_RESERVED_TYPE',
  'fastify-realtime: route %s declares the message type "%s", which the protocol reserves (reply, error, ping, pong, auth.refresh, rt.resume, rt.position)')
export const RT_ERR_SCHEMA = createError('RT_ERR_SCHEMA', 'fastify-realtime: route %s: the schema of message type "%s" does not compile: %s')
export const RT_ERR_NO_AUTH = createError('RT_ERR_NO_AUTH',
  'fastify-realtime: route %s checks sessions, but neither @fastify/jwt is registered nor auth.authenticate given. Register @fastify/jwt, pass auth.authenticate, or set auth: false')
export const RT_ERR_WEBSOCKET_REGISTERED = createError('RT_ERR_WEBSOCKET_REGISTERED',
  'fastify-realtime: @fastify/websocket was registered before fastify-realtime, and its default preClose closes every socket with no code (clients see 1005). ' +
  'Either let fastify-realtime register it (drop your registration and pass its options as the `websocket` option), or register it with ' +
  '`{ preClose: realtimePreClose }` (exported by fastify-realtime) and pass `externalWebsocket: true` to fastify-realtime')
export const RT_ERR_ASYNCAPI_NOT_READY = createError('RT_ERR_ASYNCAPI_NOT_READY',
  'fastify-realtime: app.realtime.asyncapi() must be called after app.ready(), when every realtime route is registered')
export const RT_ERR_ASYNCAPI_SCHEMA = createError('RT_ERR_ASYNCAPI_SCHEMA',
  'fastify-realtime: AsyncAPI document: route %s, type "%s", %s')
