// Two unmodified JavaScript Yjs clients (yjs + y-websocket) edit one Larder
// list concurrently, one of them goes offline and back, and both must
// converge; a third one's connection is cut without a close frame and its
// presence must vanish for the others within 5 s. Prints the converged
// items as JSON on stdout.
//
// usage: LARDER_TOKEN=<access token> node interop.mjs <ws://host:port/v1/sync> <list-id> [<ws://second-replica/v1/sync>]
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { randomUUID } from 'node:crypto'

const [serverA, listId, serverB = serverA] = process.argv.slice(2)
if (!serverA || !listId) {
  console.error('usage: node interop.mjs <server-url> <list-id> [<second-server-url>]')
  process.exit(2)
}

const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function client (server, name) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(server, listId, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    // How a browser or Node client passes its access token: y-websocket
    // appends params to the URL (?token=...).
    params: { token: process.env.LARDER_TOKEN ?? '' }
  })
  provider.awareness.setLocalStateField('user', { name })
  return { doc, provider, items: doc.getMap('items'), name }
}

function whenSynced (c) {
  if (c.provider.synced) return Promise.resolve()
  return Promise.race([
    new Promise((resolve) => c.provider.once('sync', (s) => s && resolve())),
    timeout(10000, `${c.name} sync`)
  ])
}

function addItem (c, id, name) {
  c.doc.transact(() => {
    const item = new Y.Map()
    item.set('name', name)
    item.set('quantity', '1')
    item.set('status', 'needed')
    item.set('addedBy', c.name)
    item.set('addedAt', Date.now())
    item.set('position', 'V')
    c.items.set(id, item)
  })
}

// node:crypto, not the global `crypto`: Node 18 (Debian 12's) has no global.
const uuid = () => randomUUID()
const itemsJson = (c) => c.items.toJSON()

async function converge (a, b, what) {
  const deadline = Date.now() + 15000
  while (Date.now() < deadline) {
    if (JSON.stringify(sorted(itemsJson(a))) === JSON.stringify(sorted(itemsJson(b)))) return
    await sleep(50)
  }
  throw new Error(`did not converge: ${what}\nA=${JSON.stringify(itemsJson(a))}\nB=${JSON.stringify(itemsJson(b))}`)
}

function sorted (obj) {
  if (Array.isArray(obj) || obj === null || typeof obj !== 'object') return obj
  return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, sorted(obj[k])]))
}

async function main () {
  const a = client(serverA, 'ann')
  const b = client(serverB, 'bob')
  await Promise.all([whenSynced(a), whenSynced(b)])

  // Concurrent edits from both, including the same fields of one item.
  const shared = uuid()
  addItem(a, shared, 'Milk')
  await converge(a, b, 'shared item')
  for (let i = 0; i < 20; i++) {
    addItem(a, uuid(), `ann ${i}`)
    addItem(b, uuid(), `bob ${i}`)
    a.items.get(shared).set('quantity', `${i} l`)
    b.items.get(shared).set('quantity', `${i + 100} l`)
    b.items.get(shared).set('status', i % 2 ? 'in_cart' : 'needed')
  }
  await converge(a, b, 'concurrent edits')

  // Presence: each sees the other.
  const sees = (c, name) => [...c.provider.awareness.getStates().values()].some((s) => s.user && s.user.name === name)
  const presenceDeadline = Date.now() + 5000
  while (!(sees(a, 'bob') && sees(b, 'ann'))) {
    if (Date.now() > presenceDeadline) throw new Error('clients do not see each other\'s presence')
    await sleep(20)
  }

  // Bob goes offline, edits, and comes back.
  b.provider.disconnect()
  for (let i = 0; i < 30; i++) {
    addItem(b, uuid(), `offline ${i}`)
  }
  b.items.get(shared).set('note', 'written offline')
  addItem(a, uuid(), 'while bob was away')
  b.provider.connect()
  await whenSynced(b)
  await converge(a, b, 'after reconnect')

  // A client whose TCP connection is cut without a close frame: its
  // presence vanishes for the others within 5 s, on its own replica (ann)
  // and on the other (bob, when the script runs on two replicas).
  const cat = client(serverA, 'cat')
  await whenSynced(cat)
  const seenDeadline = Date.now() + 5000
  while (!(sees(a, 'cat') && sees(b, 'cat'))) {
    if (Date.now() > seenDeadline) throw new Error('the others do not see cat')
    await sleep(20)
  }
  cat.provider.shouldConnect = false
  cat.provider.ws._socket.destroy()
  const cutAt = Date.now()
  while (sees(a, 'cat') || sees(b, 'cat')) {
    if (Date.now() - cutAt > 5000) {
      throw new Error(`cat's presence outlived its cut connection: ann sees it ${sees(a, 'cat')}, bob ${sees(b, 'cat')}`)
    }
    await sleep(20)
  }
  console.error(`presence of a cut connection gone after ${Date.now() - cutAt} ms`)

  process.stdout.write(JSON.stringify(sorted(itemsJson(a))) + '\n')
  a.provider.destroy()
  b.provider.destroy()
  // Give the close frames a moment to leave.
  await sleep(100)
  process.exit(0)
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(1)
})
