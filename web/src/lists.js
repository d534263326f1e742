// One open list: its Yjs document kept in the browser (y-indexeddb), the
// unmodified y-websocket provider, and what the server has stored.
//
// The provider connects with `?ack=1`; the server's durable
// acknowledgement (message 100, a state vector as stored) is read by a
// message handler of our own. Each local edit is remembered as (client,
// clock after it) in localStorage, so the count of edits the server has
// not stored survives a reload while offline; an acknowledgement whose
// state vector reaches that clock removes it. A removal inserts nothing,
// so it also writes the `receipts` map (the document's schema in the
// README), which gives it a clock the acknowledgement can cover.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { IndexeddbPersistence } from 'y-indexeddb'
import * as decoding from 'lib0/decoding'
import { accessToken, refresh } from './session.js'

const DURABLE_ACK = 100
const LOCAL = 'larder-local'

function socketBase () {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}/v1/sync`
}

function uuid () {
  return crypto.randomUUID()
}

/** Fractional position after `last` (digits 0-9A-Za-z, sorted as ASCII). */
function positionAfter (last) {
  const digits = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
  if (!last) return 'V'
  const i = digits.indexOf(last[last.length - 1])
  if (i >= 0 && i < digits.length - 2) return last.slice(0, -1) + digits[i + 1]
  return last + 'V'
}

const pendingKey = (id) => `larder.pending.${id}`

export class OpenList {
  constructor (id, user, onChange) {
    this.id = id
    this.doc = new Y.Doc()
    this.items = this.doc.getMap('items')
    this.meta = this.doc.getMap('meta')
    this.receipts = this.doc.getMap('receipts')
    this.status = 'connecting'
    this.closedWith = null
    this.onChange = onChange
    this.pending = JSON.parse(localStorage.getItem(pendingKey(id)) || '[]')
    this.local = new IndexeddbPersistence(`larder-list-${id}`, this.doc)
    this.doc.on('update', (_update, origin) => {
      if (origin === LOCAL) this.remember()
      this.changed()
    })
    this.start(user)
  }

  async start (user) {
    let token = ''
    try {
      token = await accessToken()
    } catch {
      this.status = 'offline'
      this.changed()
    }
    if (this.destroyed) return
    const provider = new WebsocketProvider(socketBase(), this.id, this.doc, {
      params: { token, ack: '1' },
      maxBackoffTime: 10_000
    })
    this.provider = provider
    provider.messageHandlers[DURABLE_ACK] = (_encoder, decoder) => {
      this.acknowledged(Y.decodeStateVector(decoding.readVarUint8Array(decoder)))
    }
    provider.on('status', ({ status }) => {
      this.status = status === 'connected' ? 'syncing' : status === 'connecting' ? 'connecting' : 'offline'
      this.changed()
    })
    provider.on('sync', (synced) => { if (synced) this.changed() })
    provider.on('closed', async ({ code, reason }) => {
      if (code === 4440 || code === 4401) {
        // The token expired: a fresh one, and on again.
        try {
          await refresh()
          provider.params.token = await accessToken()
          provider.connect()
          return
        } catch {}
      }
      this.closedWith = { code, reason }
      this.status = 'stopped'
      this.changed()
    })
    if (user) {
      provider.awareness.setLocalStateField('user', { id: user.id, name: user.display_name })
    }
    provider.awareness.on('change', () => this.changed())
    // The provider does not watch the network: follow the browser's word.
    this.onOffline = () => { provider.disconnect(); this.status = 'offline'; this.changed() }
    this.onOnline = () => { if (this.status !== 'stopped') provider.connect() }
    window.addEventListener('offline', this.onOffline)
    window.addEventListener('online', this.onOnline)
    if (!navigator.onLine) this.onOffline()
  }

  remember () {
    const client = this.doc.clientID
    const clock = Y.decodeStateVector(Y.encodeStateVector(this.doc)).get(client)
    this.pending.push([client, clock])
    localStorage.setItem(pendingKey(this.id), JSON.stringify(this.pending))
  }

  acknowledged (stored) {
    const before = this.pending.length
    this.pending = this.pending.filter(([client, clock]) => (stored.get(client) || 0) < clock)
    if (this.pending.length !== before) {
      localStorage.setItem(pendingKey(this.id), JSON.stringify(this.pending))
    }
    this.savedAt = this.pending.length === 0 ? new Date() : this.savedAt
    this.changed()
  }

  changed () {
    if (this.onChange) this.onChange(this)
  }

  /** offline | connecting | syncing | saved | stopped */
  get state () {
    if (this.status === 'stopped') return 'stopped'
    if (this.status !== 'syncing') return this.status
    return this.provider && this.provider.synced && this.pending.length === 0 ? 'saved' : 'syncing'
  }

  get unsaved () {
    return this.pending.length
  }

  /** Who else looks at the list now. */
  get present () {
    if (!this.provider) return []
    const mine = this.doc.clientID
    const seen = new Map()
    for (const [client, state] of this.provider.awareness.getStates()) {
      if (client !== mine && state.user) seen.set(state.user.id, state.user.name)
    }
    return [...seen.values()]
  }

  get name () {
    return this.meta.get('name') || ''
  }

  rows () {
    const rows = []
    for (const [id, item] of this.items) {
      if (!(item instanceof Y.Map) || typeof item.get('name') !== 'string') continue
      rows.push({
        id,
        name: item.get('name'),
        quantity: item.get('quantity') || '',
        category: item.get('category') || '',
        note: item.get('note') || '',
        status: item.get('status') || 'needed',
        assignee: item.get('assignee') || '',
        position: item.get('position') || ''
      })
    }
    rows.sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : a.id < b.id ? -1 : 1))
    return rows
  }

  edit (fn) {
    this.doc.transact(fn, LOCAL)
  }

  add ({ name, quantity, category, note }, userId) {
    const rows = this.rows()
    const last = rows.length ? rows[rows.length - 1].position : ''
    this.edit(() => {
      const item = new Y.Map()
      item.set('name', name)
      if (quantity) item.set('quantity', quantity)
      if (category) item.set('category', category)
      if (note) item.set('note', note)
      item.set('status', 'needed')
      item.set('position', positionAfter(last))
      if (userId) item.set('addedBy', userId)
      item.set('addedAt', Date.now())
      this.items.set(uuid(), item)
    })
  }

  update (id, fields) {
    const item = this.items.get(id)
    if (!(item instanceof Y.Map)) return
    this.edit(() => {
      for (const [key, value] of Object.entries(fields)) {
        if (value === '' || value === null) item.delete(key)
        else item.set(key, value)
      }
    })
  }

  /** Moves an item one place up (-1) or down (+1). */
  move (id, by) {
    const rows = this.rows()
    const at = rows.findIndex((r) => r.id === id)
    const to = at + by
    if (at < 0 || to < 0 || to >= rows.length) return
    const other = rows[to]
    const mine = rows[at]
    this.edit(() => {
      this.items.get(mine.id).set('position', other.position)
      this.items.get(other.id).set('position', mine.position || positionAfter(other.position))
    })
  }

  remove (ids) {
    this.edit(() => {
      for (const id of ids) this.items.delete(id)
      // A removal moves no clock: the receipt gives it one to acknowledge.
      const key = String(this.doc.clientID)
      this.receipts.set(key, (this.receipts.get(key) || 0) + 1)
    })
  }

  destroy () {
    this.destroyed = true
    window.removeEventListener('offline', this.onOffline)
    window.removeEventListener('online', this.onOnline)
    if (this.provider) this.provider.destroy()
    this.local.destroy()
    this.doc.destroy()
  }
}
