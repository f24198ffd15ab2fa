// The page: plain JavaScript on the bundled client (`/client.js`, built from lib/client by `npm run build`).
import { createClient } from '/client.js'

const $ = (id) => document.getElementById(id)
const state = { name: null, room: 'lobby', rooms: new Set(['lobby']), client: null, renewTimer: null, countdown: null, typingTimer: null }

async function fetchSession () {
  const res = await fetch('/session', { credentials: 'same-origin' })
  if (!res.ok) throw new Error('no session')
  return await res.json()
}

function setStatus (kind, text) {
  $('status').className = `status ${kind}`
  $('status').querySelector('span').textContent = text
  $('status').dataset.state = kind
}

function showError (text) {
  $('error').textContent = text
  $('error').hidden = false
}

function renderRooms () {
  $('rooms').replaceChildren(...[...state.rooms].map((room) => {
    const li = document.createElement('li')
    li.textContent = `#${room}`
    li.className = room === state.room ? 'active' : ''
    li.onclick = () => { state.room = room; $('room-title').textContent = `#${room}`; renderRooms(); renderPresence(); filterMessages() }
    return li
  }))
}

function filterMessages () {
  for (const li of $('messages').children) li.hidden = li.dataset.room !== state.room
}

function addNotice (room, text) {
  const li = document.createElement('li')
  li.dataset.room = room
  li.className = 'notice'
  li.textContent = text
  li.hidden = room !== state.room
  $('messages').append(li)
}

/**
 * The room could not be recovered (its history expired, the server's store restarted…): show the server's
 * snapshot instead of what the page had, and say so.
 */
async function reloadRoom (room, reason) {
  const res = await fetch(`/rooms/${encodeURIComponent(room)}/messages`, { credentials: 'same-origin' })
  if (!res.ok) return
  const { messages } = await res.json()
  for (const li of [...$('messages').children]) if (li.dataset.room === room) li.remove()
  addNotice(room, `history lost (${reason}), reloaded`)
  for (const message of messages) addMessage(message)
}

function addMessage ({ room, from, text, at }) {
  const li = document.createElement('li')
  li.dataset.room = room
  const who = document.createElement('b')
  who.textContent = from
  const time = document.createElement('time')
  time.textContent = new Date(at).toLocaleTimeString()
  li.append(who, document.createTextNode(text), time)
  li.hidden = room !== state.room
  $('messages').append(li)
  $('messages').scrollTop = $('messages').scrollHeight
}

// The member list and "who is typing" come from the room's presence: its members, each with `{ typing }` as data.
const watched = new Set()
function renderPresence () {
  if (state.client === null) return
  const members = state.client.presence(state.room).members
  $('presence').replaceChildren(...[...members.keys()].sort().map((user) => {
    const li = document.createElement('li')
    li.textContent = user
    return li
  }))
  const typing = [...members].filter(([user, data]) => user !== state.name && data?.typing === true).map(([user]) => user)
  $('typing').textContent = typing.length === 0 ? '' : `${typing.join(', ')} ${typing.length === 1 ? 'is' : 'are'} typing…`
}
function watchPresence (room) {
  if (watched.has(room)) return
  watched.add(room)
  const view = state.client.presence(room)
  const render = () => { if (room === state.room) renderPresence() }
  for (const event of ['sync', 'join', 'leave', 'update']) view.on(event, render)
}

/** Renews the access token a little before it expires, over the open socket (auth.refresh). */
function scheduleRenewal (exp) {
  clearTimeout(state.renewTimer)
  const lead = Math.min(30, Math.max(1, (exp - Date.now() / 1000) / 5))
  const delay = Math.max(1000, (exp - lead) * 1000 - Date.now())
  state.renewTimer = setTimeout(async () => {
    try {
      const session = await fetchSession()
      await state.client.refreshToken(session.token)
      scheduleRenewal(session.exp)
    } catch {
      // The socket will be closed with 4401 and reconnect with a fresh token from getToken.
    }
  }, delay)
}

// `client`: in onReconnect, the client the hook was given (what the rest of the page sends waits for the hook).
async function joinRoom (room, client = state.client) {
  watchPresence(room)
  await client.request('room.join', { room })
  state.rooms.add(room)
  renderRooms()
  renderPresence()
}

function start (session) {
  state.name = session.name
  $('who').textContent = `signed in as ${session.name}`
  $('login').hidden = true
  $('chat').hidden = false
  renderRooms()
  setStatus('connecting', 'connecting…')
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/chat`
  const client = createClient(url, {
    // Other client options for experiments (and the browser test): `window.chatClientOptions = { probeInterval: 1000 }`.
    ...globalThis.chatClientOptions,
    getToken: async () => {
      const fresh = await fetchSession()
      scheduleRenewal(fresh.exp)
      return fresh.token
    },
    onReconnect: async (hooked) => { for (const room of state.rooms) await joinRoom(room, hooked) }
  })
  state.client = client
  client.on('open', () => {
    clearInterval(state.countdown)
    // Where WebSockets are blocked the client falls back to an HTTP stream, and goes back once one opens.
    setStatus('connected', client.transport === 'stream' ? 'connected (HTTP stream)' : 'connected')
    $('status').dataset.transport = client.transport
  })
  client.on('reconnecting', ({ attempt, delay }) => {
    clearInterval(state.countdown)
    const until = Date.now() + delay
    const tick = () => setStatus('reconnecting', `reconnecting in ${Math.max(0, Math.ceil((until - Date.now()) / 1000))} s (attempt ${attempt})`)
    tick()
    state.countdown = setInterval(tick, 250)
  })
  client.on('close', ({ code }) => { if ($('status').dataset.state === 'connected') setStatus('reconnecting', `disconnected (${code})`) })
  client.on('offline', (err) => {
    clearInterval(state.countdown)
    setStatus('offline', `offline: ${err.code ?? err.message}`)
  })
  // An error envelope that answered no request (a rate-limited `typing`, say): shown, the connection is fine.
  client.on('error', (err) => { showError(`${err.code}: ${err.message}`) })
  client.on('chat.message', addMessage)
  // After a reconnect each room either recovered (the missed messages arrive through chat.message, once, in
  // order) or not, and then the page reloads it.
  client.on('recovery', ({ room, recovered, reason }) => {
    if (!recovered) reloadRoom(room, reason).catch((err) => showError(`reload of #${room} failed: ${err.message}`))
  })
  client.on('open', () => { if (state.rooms.size === 1 && client.presence('lobby').v === undefined) joinRoom('lobby').catch((err) => showError(`${err.code}: ${err.message}`)) })
}

$('login').addEventListener('submit', async (event) => {
  event.preventDefault()
  const res = await fetch('/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: $('name').value.trim() }) })
  if (!res.ok) {
    $('login-error').textContent = (await res.json()).message
    $('login-error').hidden = false
    return
  }
  start(await res.json())
})

$('send').addEventListener('submit', async (event) => {
  event.preventDefault()
  const text = $('text').value
  if (text === '') return
  $('error').hidden = true
  try {
    await state.client.request('chat.send', { room: state.room, text })
    $('text').value = ''
    clearTimeout(state.typingTimer)
    setTyping(false)
  } catch (err) {
    // The server's own words: VALIDATION_FAILED for a message over the limit, RATE_LIMITED when sending too fast.
    showError(`${err.code}: ${err.details?.[0]?.message ?? err.message}`)
  }
})

// Typing: true on the first keystroke, false after 2 s without one (or once sent); each is a presence update.
function setTyping (typing) {
  if (state.client === null || state.typing === typing) return
  state.typing = typing
  try { state.client.send('typing', { room: state.room, typing }) } catch {}
}
$('text').addEventListener('input', () => {
  setTyping(true)
  clearTimeout(state.typingTimer)
  state.typingTimer = setTimeout(() => { setTyping(false) }, 2000)
})

$('join').addEventListener('submit', async (event) => {
  event.preventDefault()
  const room = $('new-room').value.trim()
  if (room === '') return
  try {
    await joinRoom(room)
    state.room = room
    $('room-title').textContent = `#${room}`
    $('new-room').value = ''
    renderRooms()
    renderPresence()
    filterMessages()
  } catch (err) {
    showError(`${err.code}: ${err.message}`)
  }
})

fetchSession().then(start, () => { $('name').focus() })
