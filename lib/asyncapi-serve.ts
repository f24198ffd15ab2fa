// `app.realtime.asyncapi()` and the `asyncapi` option: the document as JSON and YAML, and the docs page.
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, onRequestHookHandler } from 'fastify'
import { buildAsyncApi, type AsyncApiDocument, type AsyncApiOptions, type AsyncApiServer, type DocumentedRoute } from './asyncapi.js'
import { renderPage } from './asyncapi-page.js'
import { RT_ERR_OPTIONS } from './errors.js'
import { checkKeys } from './option-keys.js'
import type { RealtimeContext } from './route.js'

/** The `asyncapi` option: serve the document and a page. */
export interface AsyncApiServeOptions {
  /**
   * Where the JSON document is served; the YAML one is at the same path ending in `.yaml`.
   * @default '/asyncapi.json'
   */
  path?: string
  /**
   * Where the docs page is served (it needs no network: no CDN, no fonts), or `false` for none.
   * @default '/asyncapi'
   */
  page?: string | false
  /** The Info Object. @default { title: 'Realtime API', version: '1.0.0' } */
  info?: AsyncApiOptions['info']
  /** The servers, by name. @default the server that answered the request (`ws` or `wss`, its Host) */
  servers?: Record<string, AsyncApiServer>
  /** Runs before the documentation routes answer (to put them behind a login, say). @default none */
  onRequest?: onRequestHookHandler
}

/** The routes of `ctx` as the document reads them. */
export function documentedRoutes (ctx: RealtimeContext): DocumentedRoute[] {
  return ctx.routes.map(({ route, instance }) => ({
    path: instance.prefix + route.url,
    definition: route.definition,
    auth: route.auth,
    origins: route.definition.origins ?? ctx.options.origins,
    requireOrigin: route.requireOrigin,
    limits: ctx.options.limits
  }))
}

function yamlPathOf (path: string): string {
  return path.endsWith('.json') ? path.slice(0, -5) + '.yaml' : path + '.yaml'
}

function checkPath (value: unknown, name: string): void {
  if (typeof value !== 'string' || !value.startsWith('/')) throw new RT_ERR_OPTIONS(`asyncapi.${name}: expected a path starting with /, got ${String(value)}`)
}

/** The protocol features the app turned on, whose reserved messages the document describes. */
function featuresOf (ctx: RealtimeContext): { history: boolean, presence: boolean } {
  return { history: ctx.options.history !== undefined, presence: ctx.options.presence?.events === true }
}

/**
 * Wires `app.realtime.asyncapi()` (usable from `onReady` on) and, with the option, the documentation routes. They
 * are plain GET routes: no realtime handshake, and hidden from @fastify/swagger. The document is built at
 * `app.ready()`, so a schema JSON cannot express fails the start, not a request.
 */
export function setupAsyncApi (app: FastifyInstance, ctx: RealtimeContext, options: AsyncApiServeOptions | false | undefined): void {
  app.addHook('onReady', async function realtimeAsyncApiReady () {
    ctx.registry.asyncapi = (o: AsyncApiOptions) => buildAsyncApi(documentedRoutes(ctx), o, featuresOf(ctx))
  })
  if (options === undefined || options === false) return
  if (typeof options !== 'object' || options === null) throw new RT_ERR_OPTIONS('asyncapi: expected an object or false')
  checkKeys(options, ['path', 'page', 'info', 'servers', 'onRequest'], 'asyncapi')
  const path = options.path ?? '/asyncapi.json'
  const page = options.page ?? '/asyncapi'
  checkPath(path, 'path')
  if (page !== false) checkPath(page, 'page')
  const info = options.info ?? { title: 'Realtime API', version: '1.0.0' }

  let base: AsyncApiDocument | undefined
  let yaml: { servers: string, text: string } | undefined
  app.addHook('onReady', async function realtimeAsyncApiBuild () {
    // The same features as app.realtime.asyncapi(): a client in another language learns recovery and presence here.
    base = buildAsyncApi(documentedRoutes(ctx), { info }, featuresOf(ctx))
  })
  const documentFor = (request: FastifyRequest): AsyncApiDocument => {
    const servers = options.servers ?? { default: { host: request.host, protocol: request.protocol === 'https' ? 'wss' : 'ws' } }
    const { asyncapi, info: i, ...rest } = base as AsyncApiDocument
    return { asyncapi, info: i, servers, ...rest }
  }
  // `hide` is @fastify/swagger's (and what @fastify/websocket sets on socket routes); Fastify itself ignores it.
  const routeOptions = { schema: { hide: true } as FastifySchema, ...(options.onRequest !== undefined ? { onRequest: options.onRequest } : {}) }

  app.get(path, routeOptions, async function realtimeAsyncApiJson (request: FastifyRequest, reply: FastifyReply) {
    return await reply.type('application/json; charset=utf-8').send(JSON.stringify(documentFor(request), null, 2))
  })
  app.get(yamlPathOf(path), routeOptions, async function realtimeAsyncApiYaml (request: FastifyRequest, reply: FastifyReply) {
    const document = documentFor(request)
    const servers = JSON.stringify(document.servers)
    if (yaml?.servers !== servers) {
      const { stringify } = await import('yaml')
      yaml = { servers, text: stringify(document, { aliasDuplicateObjects: false }) }
    }
    return await reply.type('application/yaml; charset=utf-8').send(yaml.text)
  })
  if (page !== false) {
    app.get(page, routeOptions, async function realtimeAsyncApiPage (request: FastifyRequest, reply: FastifyReply) {
      const prefix = app.prefix
      return await reply.type('text/html; charset=utf-8').send(renderPage(documentFor(request), { json: prefix + path, yaml: prefix + yamlPathOf(path) }))
    })
  }
}
