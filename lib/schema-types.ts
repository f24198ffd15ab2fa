/**
 * A TypeBox schema as the public types see it: structurally, by the `static` type every TypeBox schema carries.
 * Not `TSchema` itself on purpose: its `[Kind]` key is a unique symbol declared once per TypeBox build, so an app
 * whose TypeBox is another copy, or the CommonJS build of the same copy (a CommonJS TypeScript project), would get
 * `Property '[Kind]' is missing` on every schema. The plugin still compiles only TypeBox schemas at run time.
 */
export interface SchemaLike {
  static: unknown
  params: unknown[]
}

/** The TypeScript type of a schema's data: TypeBox's `Static<T>`, read structurally. */
export type StaticOf<T> = 0 extends 1 & T ? any : T extends { static: infer S } ? S : unknown
