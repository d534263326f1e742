// Vendors, sharing a list with a vendor on WhatsApp, following the share
// and the vendor's replies, orders, and search across a family's lists.
// Screens and panels over the REST API: they need the network and say so.

import { api } from './session.js'
import { errorText, form, h, show } from './ui.js'

const SHARE_STATUS = {
  pending: 'Waiting to be sent',
  sent: 'Sent',
  delivered: 'Delivered',
  read: 'Read',
  failed: 'Not sent'
}
const ORDER_NEXT = { placed: ['confirmed', 'cancelled'], confirmed: ['delivered', 'cancelled'] }
const ORDER_LABEL = {
  placed: 'Placed',
  confirmed: 'Confirmed',
  delivered: 'Delivered',
  cancelled: 'Cancelled'
}

/** The family's vendors: the list, and for admins adding and removing. */
export async function vendorsScreen (familyId) {
  const [{ vendors }, family] = await Promise.all([
    api('GET', `/v1/families/${familyId}/vendors?limit=200`),
    api('GET', `/v1/families/${familyId}`)
  ])
  const admin = family.role === 'admin'
  show(
    h('p', {}, h('a', { href: '#/' }, '← All lists')),
    h('h1', {}, `Vendors of ${family.name}`),
    vendors.length
      ? h('ul', { class: 'lists', 'aria-label': 'Vendors' }, vendors.map((v) => h('li', { 'data-vendor': v.name },
        h('span', {}, h('strong', {}, v.name), ' ', v.whatsapp_number, v.notes ? ` · ${v.notes}` : ''),
        admin
          ? h('button', {
            class: 'icon danger',
            'aria-label': `Remove ${v.name}`,
            onclick: async () => { await api('DELETE', `/v1/vendors/${v.id}`); vendorsScreen(familyId) }
          }, '✕')
          : null)))
      : h('p', {}, 'No vendors yet.'),
    admin
      ? h('section', { 'aria-labelledby': 'new-vendor' }, h('h2', { id: 'new-vendor' }, 'Add a vendor'),
        form('Add a vendor', [['name', 'Vendor name', 'text', { required: true, maxlength: 100 }],
          ['number', 'WhatsApp number', 'tel', { required: true, placeholder: '+44 7700 900123' }],
          ['notes', 'Notes']], 'Add vendor', async ({ name, number, notes }) => {
          await api('POST', `/v1/families/${familyId}/vendors`, { name, whatsapp_number: number, notes: notes || undefined })
          await vendorsScreen(familyId)
        }))
      : h('p', {}, 'Admins of the family add vendors.')
  )
}

/** Items of the family's lists whose name holds `q`. */
export async function searchScreen (familyId, q) {
  const results = q ? (await api('GET', `/v1/families/${familyId}/items?q=${encodeURIComponent(q)}&limit=100`)).items : []
  const search = form('Search items', [['q', 'Search the family\'s lists', 'search', { required: true, value: q }]], 'Search',
    async ({ q }) => { location.hash = `#/family/${familyId}/search/${encodeURIComponent(q)}` })
  show(
    h('p', {}, h('a', { href: '#/' }, '← All lists')),
    h('h1', {}, 'Search'),
    search,
    q
      ? (results.length
          ? h('ul', { class: 'lists', 'aria-label': 'Found items' }, results.map((r) => h('li', {},
            h('a', { href: `#/list/${r.list_id}` }, r.name), h('span', { class: 'counts' }, r.status.replace('_', ' ')))))
          : h('p', {}, `Nothing called “${q}”.`))
      : null
  )
}

/**
 * The list's vendor panel: send it to a vendor, follow each share and the
 * vendor's replies, place orders from a share and move them along.
 * Refreshes itself while it is on screen.
 */
export function vendorPanel (listId, neededItemIds) {
  const panel = h('section', { class: 'vendor-panel', 'aria-labelledby': 'send' })
  let familyId = null
  let timer = null

  async function render () {
    clearTimeout(timer)
    if (!panel.isConnected && familyId) return
    try {
      if (!familyId) familyId = (await api('GET', `/v1/lists/${listId}`)).family_id
      const [{ vendors }, { shares }, { orders }] = await Promise.all([
        api('GET', `/v1/families/${familyId}/vendors?limit=200`),
        api('GET', `/v1/lists/${listId}/shares?limit=10`),
        api('GET', `/v1/families/${familyId}/orders?limit=50`)
      ])
      const mine = orders.filter((o) => o.list_id === listId)
      panel.replaceChildren(
        h('h2', { id: 'send' }, 'Send to a vendor'),
        vendors.length
          ? sendForm(vendors)
          : h('p', {}, h('a', { href: `#/family/${familyId}/vendors` }, 'Add a vendor'), ' to send this list on WhatsApp.'),
        shares.length ? h('h3', {}, 'Sent') : null,
        shares.length ? h('ul', { class: 'shares', 'aria-label': 'Shares' }, shares.map(shareRow)) : null,
        mine.length ? h('h3', {}, 'Orders') : null,
        mine.length ? h('ul', { class: 'orders', 'aria-label': 'Orders' }, mine.map(orderRow)) : null
      )
    } catch (e) {
      panel.replaceChildren(h('h2', { id: 'send' }, 'Send to a vendor'), h('p', { class: 'muted' }, `${errorText(e)} Vendors need the network.`))
    }
    if (panel.isConnected || !familyId) timer = setTimeout(render, 3000)
  }

  function sendForm (vendors) {
    const select = h('select', { id: 'share-vendor', name: 'vendor' }, vendors.map((v) => h('option', { value: v.id }, v.name)))
    const note = h('input', { id: 'share-note', name: 'note', maxlength: 500 })
    const error = h('p', { class: 'error', role: 'alert' })
    const el = h('form', { 'aria-label': 'Send on WhatsApp' },
      h('div', { class: 'field' }, h('label', { for: 'share-vendor' }, 'Vendor'), select),
      h('div', { class: 'field' }, h('label', { for: 'share-note' }, 'Note for the vendor'), note),
      h('button', { type: 'submit' }, 'Send on WhatsApp'), error)
    el.addEventListener('submit', async (event) => {
      event.preventDefault()
      error.textContent = ''
      try {
        await api('POST', `/v1/lists/${listId}/shares`, { vendor_id: select.value, note: note.value.trim() || undefined })
        await render()
      } catch (e) {
        error.textContent = errorText(e)
      }
    })
    return el
  }

  function shareRow (share) {
    const when = new Date(share.created_at).toLocaleString()
    return h('li', { class: 'share', 'data-share-status': share.status },
      h('p', {}, h('strong', {}, share.vendor_name || 'Vendor'), ` · ${when} · `,
        h('span', { class: `share-status ${share.status}` }, SHARE_STATUS[share.status] || share.status),
        share.detail ? ` (${share.detail})` : '',
        share.error ? ` (${share.error.message})` : ''),
      share.replies.length
        ? h('ul', { class: 'replies', 'aria-label': 'Replies' }, share.replies.map((r) => h('li', {},
          h('span', { class: 'muted' }, `${r.sender_name || 'Vendor'}: `), r.body || `(${r.kind})`)))
        : null,
      ['sent', 'delivered', 'read'].includes(share.status)
        ? h('button', {
          class: 'secondary',
          onclick: async () => {
            const items = neededItemIds()
            await api('POST', `/v1/lists/${listId}/orders`, { share_id: share.id, item_ids: items })
            await render()
          }
        }, 'Place order with this vendor')
        : null)
  }

  function orderRow (order) {
    return h('li', { class: 'order', 'data-order-status': order.status },
      h('span', {}, `${ORDER_LABEL[order.status] || order.status} · ${order.items ? order.items.length : 0} item(s)`),
      (ORDER_NEXT[order.status] || []).map((next) => h('button', {
        class: 'secondary',
        onclick: async () => { await api('PATCH', `/v1/orders/${order.id}`, { status: next }); await render() }
      }, next === 'cancelled' ? 'Cancel' : `Mark ${ORDER_LABEL[next].toLowerCase()}`)))
  }

  render()
  return panel
}
