// The docs page: one HTML file with its style and script inline and the document embedded, so it renders with no
// network at all (no CDN, no fonts, no second request). It lists each channel's handshake, the messages a client
// sends (with their replies), the events it receives, and the shared schemas.
import type { AsyncApiDocument } from './asyncapi.js'

const STYLE = `
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:980px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin:32px 0 8px;border-bottom:2px solid #d8dce3}h3{margin:20px 0 6px}
code,pre{font:13px/1.4 ui-monospace,monospace}pre{white-space:pre-wrap}
.meta a{margin-right:12px}.addr{font:600 18px ui-monospace,monospace}
.message{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:10px 14px;margin:10px 0}
.message>header{display:flex;gap:10px;align-items:baseline}.type{font:600 15px ui-monospace,monospace}
.dir{font-size:12px;padding:1px 7px;border-radius:9px;color:#fff}.receive{background:#2f6fca}.send{background:#2a8a57}
.label{font-size:12px;text-transform:uppercase;color:#6a7280;margin-top:6px}.data{margin-left:8px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d8dce3;padding:2px 8px;text-align:left;vertical-align:top}
ul.schema{list-style:none;padding-left:16px;margin:2px 0}ul.schema>li{margin:1px 0}.req{color:#b4233a}.kw{color:#6a7280}
`

// Plain ES2017, no template literals: it is sent as it is written here.
const SCRIPT = `
(function () {
  var doc = JSON.parse(document.getElementById('asyncapi-document').textContent)
  function el (tag, attrs, children) {
    var e = document.createElement(tag)
    for (var k in attrs || {}) e.setAttribute(k, attrs[k])
    ;(children || []).forEach(function (c) { if (c != null) e.append(c) })
    return e
  }
  function inline (text) {
    var out = el('span')
    String(text).split(/(\\x60[^\\x60]*\\x60|\\*\\*[^*]+\\*\\*)/).forEach(function (part) {
      if (/^\\x60.*\\x60$/.test(part)) out.append(el('code', {}, [part.slice(1, -1)]))
      else if (/^\\*\\*.*\\*\\*$/.test(part)) out.append(el('b', {}, [part.slice(2, -2)]))
      else out.append(part)
    })
    return out
  }
  function markdown (text) {
    var box = el('div'), table = null
    String(text || '').split('\\n').forEach(function (line) {
      if (/^\\|/.test(line)) {
        if (/^\\|[\\s:|-]+\\|$/.test(line)) return
        var cells = line.split('|').slice(1, -1)
        if (table === null) { table = el('table'); box.append(table); table.append(el('tr', {}, cells.map(function (c) { return el('th', {}, [inline(c.trim())]) }))); return }
        table.append(el('tr', {}, cells.map(function (c) { return el('td', {}, [inline(c.trim())]) })))
      } else {
        table = null
        if (line.trim() !== '') box.append(el('p', {}, [inline(line)]))
      }
    })
    return box
  }
  function resolve (pointer) {
    return pointer.slice(2).split('/').reduce(function (o, k) { return o == null ? o : o[k.replace(/~1/g, '/').replace(/~0/g, '~')] }, doc)
  }
  var KEYWORDS = ['format', 'minLength', 'maxLength', 'pattern', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'minItems', 'maxItems', 'uniqueItems', 'minProperties', 'maxProperties', 'default']
  function schema (s) {
    if (s == null || typeof s !== 'object') return el('span', { class: 'kw' }, ['any'])
    if (s.$ref) { var name = s.$ref.split('/').pop(); return el('a', { href: '#schema-' + name }, [name]) }
    var parts = [], line = el('span')
    if ('const' in s) parts.push(el('code', {}, [JSON.stringify(s.const)]))
    else if (s.enum) parts.push(el('span', {}, ['one of ', el('code', {}, [s.enum.map(function (v) { return JSON.stringify(v) }).join(' | ')])]))
    else if (s.type) parts.push(el('b', {}, [[].concat(s.type).join(' | ')]))
    else if (!s.anyOf && !s.oneOf && !s.allOf) parts.push(el('span', { class: 'kw' }, ['any']))
    KEYWORDS.forEach(function (k) { if (k in s) parts.push(el('span', { class: 'kw' }, [' ' + k + ': ' + (k === 'pattern' ? s[k] : JSON.stringify(s[k]))])) })
    if (s.description) parts.push(el('span', { class: 'kw' }, [' — ', inline(s.description)]))
    parts.forEach(function (p) { line.append(p) })
    var out = el('span', {}, [line])
    if (s.properties) {
      var req = s.required || []
      out.append(el('ul', { class: 'schema' }, Object.keys(s.properties).map(function (k) {
        return el('li', { 'data-property': k }, [el('code', {}, [k]), req.indexOf(k) >= 0 ? el('span', { class: 'req', title: 'required' }, ['*']) : null, ': ', schema(s.properties[k])])
      })))
    }
    if (s.patternProperties) out.append(el('ul', { class: 'schema' }, Object.keys(s.patternProperties).map(function (k) { return el('li', {}, [el('code', {}, ['[' + k + ']']), ': ', schema(s.patternProperties[k])]) })))
    if (s.items) out.append(el('ul', { class: 'schema' }, [].concat(s.items).map(function (i) { return el('li', {}, ['items: ', schema(i)]) })))
    ;['anyOf', 'oneOf', 'allOf'].forEach(function (k) { if (s[k]) out.append(el('ul', { class: 'schema' }, s[k].map(function (i) { return el('li', {}, [k + ': ', schema(i)]) }))) })
    return out
  }
  // An envelope in one line (its keys, optional ones marked), then the schema of its data.
  function envelopeLine (payload) {
    var props = payload.properties || {}, req = payload.required || []
    return el('code', {}, ['{ ' + Object.keys(props).map(function (k) {
      return k + (req.indexOf(k) >= 0 ? '' : '?') + ('const' in props[k] ? ': ' + JSON.stringify(props[k].const) : '')
    }).join(', ') + ' }'])
  }
  function body (box, label, m) {
    var payload = m.payload || {}, props = payload.properties || {}
    box.append(el('div', { class: 'label' }, [label]), envelopeLine(payload))
    if (m.name === 'error') { box.append(' ', el('a', { href: '#errors' }, ['error codes'])); return }
    if ('data' in props) box.append(el('div', { class: 'data' }, [el('code', {}, ['data']), ': ', schema(props.data)]))
    else if (!payload.properties) box.append(el('div', { class: 'data' }, [schema(payload)]))
  }
  function message (op, ref) {
    var m = resolve(ref.$ref)
    var box = el('section', { class: 'message', 'data-type': m.name, 'data-direction': op.action }, [
      el('header', {}, [el('span', { class: 'dir ' + op.action }, [op.action === 'receive' ? 'client → server' : 'server → client']), el('span', { class: 'type' }, [m.name]), m.summary ? inline(m.summary) : null])
    ])
    body(box, 'message', m)
    ;(op.reply ? op.reply.messages : []).forEach(function (r) { var rm = resolve(r.$ref); body(box, rm.name === 'error' ? 'or' : 'answered with', rm) })
    return box
  }
  function errors (ch) {
    var keys = Object.keys(ch.messages).filter(function (k) { return ch.messages[k].name === 'error' })
    if (keys.length === 0) return null
    var code = ch.messages[keys[0]].payload.properties.error
    return el('section', { class: 'message', id: 'errors' }, [el('span', { class: 'type' }, ['error']), ' ', envelopeLine(ch.messages[keys[0]].payload), el('div', {}, [schema(code)])])
  }
  var main = document.querySelector('main')
  main.append(el('h1', {}, [doc.info.title + ' ', el('small', {}, [doc.info.version])]))
  if (doc.info.description) main.append(markdown(doc.info.description))
  main.append(el('p', { class: 'meta' }, [el('a', { href: document.body.dataset.json }, ['AsyncAPI JSON']), el('a', { href: document.body.dataset.yaml }, ['YAML']), 'AsyncAPI ' + doc.asyncapi]))
  Object.keys(doc.servers || {}).forEach(function (k) { var s = doc.servers[k]; main.append(el('p', {}, ['Server ', el('code', {}, [k]), ': ', el('code', {}, [s.protocol + '://' + s.host + (s.pathname || '')])])) })
  Object.keys(doc.channels).forEach(function (id) {
    var ch = doc.channels[id]
    var text = String(ch.description || ''), cut = text.indexOf('\\n\\n')
    var more = cut < 0 ? null : el('details', {}, [el('summary', {}, ['Handshake, limits, refusals and close codes']), markdown(text.slice(cut + 2))])
    var section = el('section', { class: 'channel', id: 'channel-' + id, 'data-address': ch.address }, [el('h2', {}, [el('span', { class: 'addr' }, [ch.address])]), markdown(cut < 0 ? text : text.slice(0, cut)), more])
    var ops = Object.keys(doc.operations).map(function (k) { return doc.operations[k] }).filter(function (op) { return op.channel.$ref === '#/channels/' + id })
    ;[['receive', 'Messages the client sends'], ['send', 'Events the server sends']].forEach(function (pair) {
      section.append(el('h3', {}, [pair[1]]))
      ops.filter(function (op) { return op.action === pair[0] }).forEach(function (op) {
        op.messages.forEach(function (r) { section.append(message(op, r)) })
      })
    })
    section.append(el('h3', {}, ['Errors']), errors(ch))
    main.append(section)
  })
  var schemas = (doc.components && doc.components.schemas) || {}
  if (Object.keys(schemas).length > 0) {
    main.append(el('h2', {}, ['Schemas']))
    Object.keys(schemas).forEach(function (k) { main.append(el('section', { class: 'message', id: 'schema-' + k }, [el('span', { class: 'type' }, [k]), schema(schemas[k])])) })
  }
})()
`

function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** The page for one document; `links` are the paths of the JSON and YAML documents. */
export function renderPage (document: AsyncApiDocument, links: { json: string, yaml: string }): string {
  // `<` escaped so that no string in the document can end the script element.
  const json = JSON.stringify(document).replace(/</g, '\\u003c')
  return '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">' +
    `<title>${escapeHtml(document.info.title)}: AsyncAPI</title><style>${STYLE}</style></head>` +
    `<body data-json="${escapeHtml(links.json)}" data-yaml="${escapeHtml(links.yaml)}"><main></main>` +
    `<script type="application/json" id="asyncapi-document">${json}</script><script>${SCRIPT}</script></body></html>\n`
}
