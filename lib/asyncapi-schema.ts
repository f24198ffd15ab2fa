// TypeBox schemas as the JSON Schema an AsyncAPI document may hold. TypeBox has kinds for JavaScript values
// (Date, BigInt, Uint8Array, functions...) that no JSON frame can carry; each either has the form JSON.stringify
// gives it on the way out, or generation fails naming the place, so the document is never invalid or a lie.
import { RT_ERR_ASYNCAPI_SCHEMA } from './errors.js'

/** Which way the data travels: `in` is parsed from a client's JSON, `out` is made by JSON.stringify on the server. */
export type Direction = 'in' | 'out'

/** Where a schema sits, for the error that names it. */
export interface SchemaSite {
  route: string
  type: string
  direction: Direction
}

/** A JSON Schema as plain data. */
export type JsonSchema = Record<string, unknown>

// The `type` values of JSON Schema; anything else is a TypeBox kind for a JavaScript value.
const JSON_TYPES: ReadonlySet<string> = new Set(['array', 'boolean', 'integer', 'null', 'number', 'object', 'string'])
// Keywords whose values are data, not schemas: copied as JSON.
const DATA_KEYWORDS: ReadonlySet<string> = new Set(['const', 'enum', 'default', 'examples', 'example'])
// Keywords TypeBox keeps for its own kinds that mean nothing once the kind is converted.
const DATE_KEYWORDS = ['exclusiveMaximumTimestamp', 'exclusiveMinimumTimestamp', 'maximumTimestamp', 'minimumTimestamp', 'multipleOfTimestamp']

function pointer (path: readonly string[]): string {
  return path.length === 0 ? '(data)' : '/' + path.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/')
}

/** A component name from a `$id` (which may be a URI): the characters AsyncAPI allows in component keys. */
export function componentName (id: string): string {
  return id.replace(/^[a-z]+:\/\//i, '').replace(/[^A-Za-z0-9._-]/g, '_') || 'schema'
}

/**
 * Converts the schemas of one document: every schema with a `$id` becomes a component (`#/components/schemas/...`)
 * and every `$ref` points there, since a bare `$ref: 'Node'` would be read as a file name.
 */
export class SchemaConverter {
  /** The components, by component name. */
  readonly components: Record<string, JsonSchema> = {}
  private readonly ids = new Map<string, unknown>()
  private readonly names = new Map<string, string>()

  /** First pass: learns every `$id`, so a `$ref` may point at a schema met later in the document. */
  collect (schema: unknown): void {
    if (Array.isArray(schema)) {
      for (const item of schema) this.collect(item)
      return
    }
    if (schema === null || typeof schema !== 'object') return
    const id = (schema as { $id?: unknown }).$id
    if (typeof id === 'string' && !this.ids.has(id)) {
      this.ids.set(id, schema)
      let name = componentName(id)
      for (let n = 2; [...this.names.values()].includes(name); n++) name = `${componentName(id)}_${n}`
      this.names.set(id, name)
    }
    for (const [key, value] of Object.entries(schema)) if (!DATA_KEYWORDS.has(key)) this.collect(value)
  }

  /** The JSON Schema of one message's data; throws `RT_ERR_ASYNCAPI_SCHEMA` naming the route, type and path. */
  convert (schema: unknown, site: SchemaSite): JsonSchema {
    if (schema === undefined) return {}
    return this.node(schema, site, [], true) as JsonSchema
  }

  private fail (site: SchemaSite, path: readonly string[], what: string): never {
    throw new RT_ERR_ASYNCAPI_SCHEMA(site.route, site.type, `at ${pointer(path)}: ${what}`)
  }

  private node (value: unknown, site: SchemaSite, path: string[], root: boolean): unknown {
    if (Array.isArray(value)) return value.map((item, i) => this.node(item, site, [...path, String(i)], false))
    if (value === null || typeof value !== 'object') return value
    const schema = value as Record<string, unknown>
    const id = schema.$id
    if (typeof id === 'string' && this.ids.has(id)) {
      const name = this.names.get(id) as string
      if (!(name in this.components)) {
        this.components[name] = {} // placed first, so that a recursive schema ends at its own reference
        const { $id: _, ...rest } = schema
        this.components[name] = this.plain(rest, site, path, root)
      }
      return { $ref: `#/components/schemas/${name}` }
    }
    return this.plain(schema, site, path, root)
  }

  private plain (schema: Record<string, unknown>, site: SchemaSite, path: string[], root: boolean): JsonSchema {
    const kind = schema.type
    if (typeof kind === 'string' && !JSON_TYPES.has(kind)) return this.kind(schema, kind, site, path, root)
    if (typeof schema.$ref === 'string') {
      const target = this.names.get(schema.$ref)
      if (target === undefined) this.fail(site, path, `a $ref to "${schema.$ref}", a schema found nowhere in the routes (give the referenced schema to a route, or inline it)`)
      this.node(this.ids.get(schema.$ref), site, path, false)
      return { $ref: `#/components/schemas/${target}` }
    }
    const out: JsonSchema = {}
    for (const [key, value] of Object.entries(schema)) {
      if (key === '$defs' || key === 'definitions') {
        // TypeBox modules keep their types here, each with its $id: they are components now.
        const defs = value as Record<string, unknown>
        const kept = Object.fromEntries(Object.entries(defs).filter(([, d]) => typeof (d as { $id?: unknown } | null)?.$id !== 'string'))
        for (const [name, def] of Object.entries(defs)) this.node(def, site, [...path, key, name], false)
        if (Object.keys(kept).length > 0) out[key] = this.node(kept, site, [...path, key], false)
      } else if (DATA_KEYWORDS.has(key)) {
        out[key] = this.data(value, site, [...path, key])
      } else {
        out[key] = this.node(value, site, [...path, key], false)
      }
    }
    return out
  }

  private data (value: unknown, site: SchemaSite, path: string[]): unknown {
    try {
      return value === undefined ? undefined : JSON.parse(JSON.stringify(value))
    } catch (err) {
      return this.fail(site, path, `a value JSON cannot hold (${(err as Error).message})`)
    }
  }

  /** TypeBox kinds for JavaScript values: the form JSON gives them, where there is one. */
  private kind (schema: Record<string, unknown>, kind: string, site: SchemaSite, path: string[], root: boolean): JsonSchema {
    const rest = Object.fromEntries(Object.entries(schema).filter(([k]) => k !== 'type' && !DATE_KEYWORDS.includes(k)))
    if (kind === 'Date') {
      // JSON.stringify writes a Date as its ISO string; a client's JSON can never hold a Date, so such a
      // message could never pass validation.
      if (site.direction === 'in') this.fail(site, path, 'Type.Date(), which no JSON message can satisfy (use Type.String({ format: \'date-time\' }))')
      return { ...this.plain(rest, site, path, false), type: 'string', format: 'date-time' }
    }
    if (kind === 'RegExp') {
      const { source, flags, ...others } = rest
      if (typeof flags === 'string' && flags.replace('u', '') !== '') this.fail(site, path, `Type.RegExp() with flags "${flags}", which a JSON Schema pattern cannot carry`)
      return { ...this.plain(others, site, path, false), type: 'string', pattern: source }
    }
    if ((kind === 'undefined' || kind === 'void') && root && site.direction === 'out') {
      // The envelope's data is null when the handler or the sender gives undefined.
      return { type: 'null' }
    }
    const names: Record<string, string> = {
      bigint: 'Type.BigInt() (JSON has no BigInt; JSON.stringify throws on one)',
      Uint8Array: 'Type.Uint8Array() (JSON has no bytes; send a base64 string, or a binary frame)',
      undefined: 'Type.Undefined() (JSON has no undefined; use Type.Optional() for a property that may be absent)',
      void: 'Type.Void() (JSON has no undefined)'
    }
    return this.fail(site, path, names[kind] ?? `a TypeBox kind JSON Schema cannot express (type "${kind}")`)
  }
}
