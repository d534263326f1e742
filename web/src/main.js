// Larder's web app: screens for signing in, families, their lists and one
// list, routed by the URL's hash so the service worker serves one page.

import { api, current, onSession, signIn, signOut, signUp, user } from './session.js'
import { OpenList } from './lists.js'
import { errorText, form, h, show } from './ui.js'
import { searchScreen, vendorPanel, vendorsScreen } from './vendors.js'

const accountNav = document.getElementById('account')
const net = document.getElementById('net')

const STATUS_LABEL = { needed: 'Needed', in_cart: 'In the cart', purchased: 'Purchased' }
const NEXT_STATUS = { needed: 'in_cart', in_cart: 'purchased', purchased: 'needed' }
const STATE_LABEL = {
  offline: 'Offline',
  connecting: 'Connecting…',
  syncing: 'Syncing…',
  saved: 'Saved',
  stopped: 'Stopped'
}

let open = null // the OpenList on screen
let view = null // its screen's lasting parts

// Screens ------------------------------------------------------------------

function signInScreen () {
  show(
    h('h1', {}, 'Your family\'s grocery lists'),
    h('p', {}, 'On every phone, with or without a network.'),
    h('section', { 'aria-labelledby': 'in' }, h('h2', { id: 'in' }, 'Sign in'),
      form('Sign in', [['email', 'Email', 'email', { autocomplete: 'username', required: true }],
        ['password', 'Password', 'password', { autocomplete: 'current-password', required: true }]],
      'Sign in', ({ email, password }) => signIn(email, password))),
    h('section', { 'aria-labelledby': 'up' }, h('h2', { id: 'up' }, 'New here? Create an account'),
      form('Create an account', [['name', 'Your name', 'text', { autocomplete: 'name', required: true }],
        ['email', 'Email', 'email', { autocomplete: 'email', required: true }],
        ['password', 'Password (8 characters or more)', 'password', { autocomplete: 'new-password', minlength: 8, required: true }]],
      'Create account', ({ name, email, password }) => signUp(email, password, name)))
  )
}

async function familiesScreen () {
  const { families } = await api('GET', '/v1/families')
  const blocks = []
  for (const family of families) {
    const { lists } = await api('GET', `/v1/families/${family.id}/lists`)
    const invite = family.role === 'admin'
      ? h('button', {
        class: 'secondary',
        onclick: async (event) => {
          const { code } = await api('POST', `/v1/families/${family.id}/invitations`, {})
          event.target.replaceWith(h('p', { class: 'code' }, 'Invitation code: ', h('strong', {}, code)))
        }
      }, 'Invite someone')
      : null
    blocks.push(h('section', { class: 'family', 'aria-labelledby': `fam-${family.id}` },
      h('h2', { id: `fam-${family.id}` }, family.name),
      h('p', { class: 'family-links' },
        h('a', { href: `#/family/${family.id}/vendors` }, 'Vendors'), ' · ',
        h('a', { href: `#/family/${family.id}/search/` }, 'Search items')),
      h('ul', { class: 'lists' }, lists.map((list) => h('li', {},
        h('a', { href: `#/list/${list.id}` }, list.name),
        h('span', { class: 'counts' },
          `${list.needed_count} needed · ${list.in_cart_count} in the cart · ${list.purchased_count} purchased`)))),
      form(`New list in ${family.name}`, [['name', 'New list', 'text', { required: true, maxlength: 200 }]], 'Add list',
        async ({ name }) => {
          const created = await api('POST', `/v1/families/${family.id}/lists`, { name })
          location.hash = `#/list/${created.id}`
        }),
      invite))
  }
  show(
    h('h1', {}, 'Your lists'),
    ...blocks,
    h('section', { 'aria-labelledby': 'new-family' }, h('h2', { id: 'new-family' }, 'Start a family'),
      form('Create a family', [['name', 'Family name', 'text', { required: true }]], 'Create family',
        async ({ name }) => { await api('POST', '/v1/families', { name }); route() })),
    h('section', { 'aria-labelledby': 'join' }, h('h2', { id: 'join' }, 'Join a family'),
      form('Join a family', [['code', 'Invitation code', 'text', { required: true }]], 'Join',
        async ({ code }) => { await api('POST', `/v1/invitations/${encodeURIComponent(code)}/accept`); route() }))
  )
}

function listScreen (id) {
  if (!open || open.id !== id) {
    if (open) open.destroy()
    open = new OpenList(id, user(), () => scheduleRender())
    loadMembers(open).catch(() => {})
  }
  renderList()
}

let renderQueued = false
function scheduleRender () {
  if (renderQueued) return
  renderQueued = true
  requestAnimationFrame(() => {
    renderQueued = false
    if (open && location.hash === `#/list/${open.id}`) renderList()
  })
}

function renderList () {
  const list = open
  const me = user()
  const focusedId = document.activeElement && document.activeElement.id
  const rows = list.rows()
  const state = list.state
  if (!view || view.list !== list || !view.title.isConnected) view = buildList(list, me)
  view.title.textContent = list.name || 'List'
  view.status.className = `state state-${state}`
  view.status.dataset.state = state
  view.status.textContent = STATE_LABEL[state] +
    (list.unsaved ? ` · ${list.unsaved} change${list.unsaved === 1 ? '' : 's'} not yet saved on the server` : '') +
    (list.closedWith ? ` · ${closeText(list.closedWith)}` : '')
  const present = list.present
  view.present.textContent = present.length ? `Also here: ${present.join(', ')}` : 'Nobody else is looking at this list.'
  const items = h('ul', { class: 'items', 'aria-label': 'Items' }, rows.map((row, i) => h('li', { class: `item ${row.status}`, 'data-item': row.name },
    h('button', {
      class: 'check',
      id: `check-${row.id}`,
      'aria-label': `${row.name}: ${STATUS_LABEL[row.status]}. Mark as ${STATUS_LABEL[NEXT_STATUS[row.status]]}`,
      onclick: () => list.update(row.id, { status: NEXT_STATUS[row.status] })
    }, row.status === 'purchased' ? '✔' : row.status === 'in_cart' ? '◐' : '○'),
    h('span', { class: 'name' }, row.name,
      row.quantity ? h('span', { class: 'qty' }, ` ${row.quantity}`) : null,
      row.category ? h('span', { class: 'cat' }, ` · ${row.category}`) : null,
      row.note ? h('span', { class: 'note' }, ` · ${row.note}`) : null,
      row.assignee ? h('span', { class: 'who' }, assigneeText(list, row.assignee)) : null),
    h('span', { class: 'actions' },
      h('button', { class: 'icon', id: `up-${row.id}`, 'aria-label': `Move ${row.name} up`, disabled: i === 0, onclick: () => list.move(row.id, -1) }, '↑'),
      h('button', { class: 'icon', id: `down-${row.id}`, 'aria-label': `Move ${row.name} down`, disabled: i === rows.length - 1, onclick: () => list.move(row.id, 1) }, '↓'),
      h('button', {
        class: 'icon',
        id: `mine-${row.id}`,
        'aria-label': row.assignee ? `Unassign ${row.name}` : `Assign ${row.name} to me`,
        onclick: () => list.update(row.id, { assignee: row.assignee ? '' : me.id })
      }, row.assignee ? '−' : '+'),
      h('button', { class: 'icon', id: `edit-${row.id}`, 'aria-label': `Edit ${row.name}`, onclick: () => editItem(list, row) }, '✎'),
      h('button', { class: 'icon danger', id: `del-${row.id}`, 'aria-label': `Delete ${row.name}`, onclick: () => list.remove([row.id]) }, '✕')))))
  const purchased = rows.filter((r) => r.status === 'purchased').map((r) => r.id)
  view.items.replaceChildren(rows.length ? items : h('p', {}, 'No items yet.'))
  view.footer.replaceChildren(...(purchased.length
    ? [h('button', { class: 'secondary', onclick: () => list.remove(purchased) }, `Clear ${purchased.length} purchased`)]
    : []))
  if (focusedId && document.activeElement === document.body) {
    const again = document.getElementById(focusedId)
    if (again) again.focus()
  }
}

/** The list screen's parts that stay while the list changes: what someone
 * is typing into the form survives the others' edits. */
function buildList (list, me) {
  const parts = {
    list,
    title: h('h1', {}),
    status: h('p', { class: 'state', role: 'status', 'aria-live': 'polite' }),
    present: h('p', { class: 'present', 'aria-live': 'polite' }),
    items: h('div'),
    footer: h('div')
  }
  show(
    h('p', {}, h('a', { href: '#/' }, '← All lists')),
    parts.title,
    parts.status,
    parts.present,
    form('Add an item', [['name', 'Item', 'text', { required: true, maxlength: 200 }], ['quantity', 'Quantity'], ['category', 'Category'], ['note', 'Note']],
      'Add', (values, el) => { list.add(values, me && me.id); el.reset(); el.querySelector('input').focus() }),
    parts.items,
    parts.footer,
    vendorPanel(list.id, () => list.rows().filter((r) => r.status !== 'purchased').map((r) => r.id))
  )
  return parts
}

/** Members of the list's family by user id, fetched once per list while
 * online (names for "assigned to"). */
const members = new Map()
async function loadMembers (list) {
  if (members.has(list.id)) return members.get(list.id)
  const { family_id: familyId } = await api('GET', `/v1/lists/${list.id}`)
  const found = (await api('GET', `/v1/families/${familyId}/members`)).members
  const byId = new Map(found.map((m) => [m.user_id, m.display_name]))
  members.set(list.id, byId)
  scheduleRender()
  return byId
}

function assigneeText (list, assignee) {
  const me = user()
  if (me && assignee === me.id) return ' · you'
  const name = members.has(list.id) && members.get(list.id).get(assignee)
  return name ? ` · ${name}` : ' · assigned'
}

async function editItem (list, row) {
  const known = await loadMembers(list).catch(() => new Map())
  const me = user()
  const people = new Map(known)
  if (me && !people.has(me.id)) people.set(me.id, me.display_name)
  if (row.assignee && !people.has(row.assignee)) people.set(row.assignee, 'someone else')
  const assignee = h('select', { id: 'edit-assignee', name: 'assignee' },
    h('option', { value: '' }, 'Nobody'),
    [...people].map(([id, name]) => h('option', { value: id, selected: id === row.assignee }, name)))
  const close = () => { dialog.close(); dialog.remove() }
  const edit = form(`Edit ${row.name}`, [
    ['name', 'Item', 'text', { required: true, value: row.name, maxlength: 200 }],
    ['quantity', 'Quantity', 'text', { value: row.quantity }],
    ['category', 'Category', 'text', { value: row.category }],
    ['note', 'Note', 'text', { value: row.note }]
  ], 'Save', (values) => { list.update(row.id, { ...values, assignee: assignee.value }); close() })
  edit.prepend(h('div', { class: 'field' }, h('label', { for: 'edit-assignee' }, 'Assigned to'), assignee))
  const dialog = h('dialog', { 'aria-label': `Edit ${row.name}` }, edit,
    h('button', { class: 'secondary', onclick: close }, 'Cancel'))
  document.body.append(dialog)
  dialog.showModal()
}

function closeText ({ code, reason }) {
  if (code === 4403) return 'You no longer have access to this list.'
  if (code === 4404) return 'This list was deleted.'
  return `The server closed the list (${code}${reason ? `: ${reason}` : ''}).`
}

// Routing ------------------------------------------------------------------

function renderAccount () {
  const me = user()
  accountNav.replaceChildren(me
    ? h('span', {}, me.display_name, ' ', h('button', { class: 'link', onclick: () => signOut() }, 'Sign out'))
    : '')
}

async function route () {
  renderAccount()
  if (!current()) {
    if (open) { open.destroy(); open = null }
    return signInScreen()
  }
  const match = location.hash.match(/^#\/list\/([0-9a-f-]{36})$/)
  if (match) return listScreen(match[1])
  if (open) { open.destroy(); open = null }
  const family = location.hash.match(/^#\/family\/([0-9a-f-]{36})\/(vendors|search)\/?(.*)$/)
  if (family) {
    try {
      if (family[2] === 'vendors') await vendorsScreen(family[1])
      else await searchScreen(family[1], decodeURIComponent(family[3] || ''))
    } catch (e) {
      show(h('p', {}, h('a', { href: '#/' }, '← All lists')), h('p', { class: 'error', role: 'alert' }, errorText(e)))
    }
    return
  }
  try {
    await familiesScreen()
  } catch (e) {
    show(h('h1', {}, 'Your lists'), h('p', { class: 'error', role: 'alert' }, errorText(e)),
      h('p', {}, 'Lists you opened before still work offline.'))
  }
}

function renderNet () {
  net.textContent = navigator.onLine ? '' : 'Offline'
}

window.addEventListener('hashchange', route)
window.addEventListener('online', renderNet)
window.addEventListener('offline', renderNet)
onSession(() => route())
renderNet()
route()

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js').catch(() => {})
}
