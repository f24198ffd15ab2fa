/** Where the handshake keeps a token it moved out of the URL or the protocol header, so no log line can show it. */
export const kQueryToken = Symbol('fastify-realtime.queryToken')
export const kProtocolToken = Symbol('fastify-realtime.protocolToken')
/** The route and session a raw upgrade request was admitted with. */
export const kAdmission = Symbol('fastify-realtime.admission')
