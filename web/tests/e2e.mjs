// Drives the web app in Chromium (Debian's package, through playwright-core)
// against a running `larder serve`, as two family members on two devices.
// Started by tests/tests/web.rs, which owns the server and the database:
// at each `CHECK ...` line it looks in the database and answers `OK` or
// `FAIL why` on stdin. Screenshots go to $LARDER_SCREENSHOTS.
//
// Env: LARDER_URL (http://127.0.0.1:PORT), CHROMIUM (executable),
// LARDER_SCREENSHOTS (folder), SCENARIO: `family` (two members, online
// and offline), `session` (token expiry and a removed member; the
// server's access tokens live a few seconds) or `vendor` (sharing with a
// vendor through the fake WhatsApp API, orders, search).

import { chromium } from 'playwright-core'
import { createInterface } from 'node:readline'
import { mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const base = process.env.LARDER_URL
const shots = process.env.LARDER_SCREENSHOTS
mkdirSync(shots, { recursive: true })
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8')
const password = 'correct horse battery staple'
const unique = Date.now().toString(36)

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
/** Asks the Rust side to check the database; throws on FAIL. */
async function check (what, ...args) {
  console.log(['CHECK', what, ...args].join(' '))
  const { value } = await answers.next()
  if (value !== 'OK') throw new Error(`database check ${what} failed: ${value}`)
}

function step (text) {
  console.error(`e2e: ${text}`)
}

async function axe (page, screen) {
  await page.addScriptTag({ content: axeSource })
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }))
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
  if (bad.length) {
    throw new Error(`accessibility (${screen}): ` + bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`).join(' | '))
  }
}

async function signUp (page, name, email) {
  await page.goto(base + '/')
  await page.getByRole('form', { name: 'Create an account' }).getByLabel('Your name', { exact: true }).fill(name)
  await page.getByRole('form', { name: 'Create an account' }).getByLabel('Email', { exact: true }).fill(email)
  await page.getByRole('form', { name: 'Create an account' }).getByLabel('Password (8 characters or more)').fill(password)
  await page.getByRole('button', { name: 'Create account' }).click()
  await page.getByRole('heading', { name: 'Your lists' }).waitFor()
}

const item = (page, name) => page.locator(`li[data-item="${name}"]`)

/** Ann and Bob in one family, both on its list "Weekly shop". */
async function familyOnOneList (browser) {
  const ann = await browser.newContext({ viewport: { width: 390, height: 844 } })
  const bob = await browser.newContext({ viewport: { width: 390, height: 844 } })
  const a = await ann.newPage()
  const b = await bob.newPage()
  for (const [who, page] of [['ann', a], ['bob', b]]) {
    page.on('pageerror', (e) => console.error(`e2e: ${who}: page error: ${e.message}`))
  }
  await signUp(a, 'Ann', `ann-${unique}@larder.test`)
  await a.getByLabel('Family name', { exact: true }).fill('Smiths')
  await a.getByRole('button', { name: 'Create family' }).click()
  await a.getByRole('heading', { name: 'Smiths' }).waitFor()
  await a.getByRole('button', { name: 'Invite someone' }).click()
  const code = (await a.locator('.code strong').textContent()).trim()
  await signUp(b, 'Bob', `bob-${unique}@larder.test`)
  await b.getByLabel('Invitation code', { exact: true }).fill(code)
  await b.getByRole('button', { name: 'Join' }).click()
  await b.getByRole('heading', { name: 'Smiths' }).waitFor()
  await a.getByLabel('New list', { exact: true }).fill('Weekly shop')
  await a.getByRole('button', { name: 'Add list' }).click()
  await a.getByRole('heading', { name: 'Weekly shop' }).waitFor()
  const listId = a.url().split('/').pop()
  await b.reload()
  await b.getByRole('link', { name: 'Weekly shop' }).click()
  await b.getByRole('heading', { name: 'Weekly shop' }).waitFor()
  return { ann, bob, a, b, listId }
}

async function addItem (page, name, quantity) {
  await page.getByLabel('Item', { exact: true }).fill(name)
  if (quantity) await page.getByLabel('Quantity', { exact: true }).fill(quantity)
  await page.getByRole('button', { name: 'Add', exact: true }).click()
}

/** Time to a usable sign-in screen on a slow phone: "Slow 4G"-like
 * network (150 ms latency, 1.6 Mbit/s down) and a CPU four times slower,
 * with nothing cached. Printed, never asserted (the machine is noisy). */
async function slowPhoneLoad (browser) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } })
  const page = await context.newPage()
  const cdp = await context.newCDPSession(page)
  await cdp.send('Network.enable')
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 150, downloadThroughput: (1.6 * 1024 * 1024) / 8, uploadThroughput: (750 * 1024) / 8
  })
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 })
  const started = Date.now()
  await page.goto(base + '/')
  await page.getByRole('button', { name: 'Sign in' }).waitFor()
  const ms = Date.now() - started
  const bytes = await page.evaluate(() => performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))
    .reduce((sum, e) => sum + (e.transferSize || 0), 0))
  console.error(`e2e: figure: first load on a slow phone: ${ms} ms to the sign-in screen, ${(bytes / 1024).toFixed(1)} KiB transferred`)
  await context.close()
}

async function familyScenario (browser) {
  step('first load on a slow phone')
  await slowPhoneLoad(browser)

  step('sign-in screen')
  const first = await browser.newPage()
  await first.goto(base + '/')
  await first.getByRole('heading', { name: 'Sign in' }).waitFor()
  await axe(first, 'sign in')
  await first.screenshot({ path: join(shots, 'sign-in.png'), fullPage: true })

  step('installable')
  await first.evaluate(() => navigator.serviceWorker.ready)
  const cdp = await first.context().newCDPSession(first)
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors')
  // Test contexts are incognito windows, where Chrome installs nothing:
  // every other reason is the app's.
  const appErrors = installabilityErrors.filter((e) => e.errorId !== 'in-incognito')
  if (appErrors.length) {
    throw new Error('not installable: ' + appErrors.map((e) => e.errorId).join(', '))
  }
  await first.close()

  step('sign up, a family, an invitation, a second member, one list on both devices')
  const { bob, a, b, listId } = await familyOnOneList(browser)

  step('edits and presence both ways')
  await addItem(a, 'Milk', '2 l')
  await item(b, 'Milk').waitFor()
  await b.getByText('Also here: Ann').waitFor()
  await a.getByText('Also here: Bob').waitFor()
  await b.getByRole('button', { name: /^Milk: Needed/ }).click()
  await a.getByRole('button', { name: /^Milk: In the cart/ }).waitFor()

  step('assigned to another member')
  await a.getByRole('button', { name: 'Edit Milk' }).click()
  await a.getByLabel('Assigned to', { exact: true }).selectOption({ label: 'Bob' })
  await a.getByRole('button', { name: 'Save' }).click()
  await item(a, 'Milk').getByText('· Bob').waitFor()
  await item(b, 'Milk').getByText('· you').waitFor()

  step('saved means stored')
  await a.locator('[data-state="saved"]').waitFor()
  await check('stored', listId, 'Milk')
  await axe(a, 'list')
  await a.screenshot({ path: join(shots, 'list.png'), fullPage: true })

  step('offline: edit, reload, still there')
  await b.waitForFunction(() => navigator.serviceWorker && navigator.serviceWorker.controller)
  await bob.setOffline(true)
  await b.locator('[data-state="offline"]').waitFor()
  await addItem(b, 'Bread')
  await item(b, 'Bread').waitFor()
  await b.getByText('1 change not yet saved on the server').waitFor()
  await b.reload()
  await item(b, 'Bread').waitFor()
  await item(b, 'Milk').waitFor()
  await b.getByText('1 change not yet saved on the server').waitFor()
  await check('absent', listId, 'Bread')
  await b.screenshot({ path: join(shots, 'offline.png'), fullPage: true })

  step('online again: both converge, and it is stored')
  await bob.setOffline(false)
  await b.locator('[data-state="saved"]').waitFor()
  await item(a, 'Bread').waitFor()
  await check('stored', listId, 'Bread')

  step('delete and clear purchased')
  await a.getByRole('button', { name: /^Bread: Needed/ }).click()
  await a.getByRole('button', { name: /^Bread: In the cart/ }).click()
  await a.getByRole('button', { name: 'Clear 1 purchased' }).click()
  await item(b, 'Bread').waitFor({ state: 'detached' })
  // The status line is drawn with the items: once Bread is gone here, a
  // "Saved" on screen is about the removal.
  await item(a, 'Bread').waitFor({ state: 'detached' })
  await a.locator('[data-state="saved"]').waitFor()
  await check('absent', listId, 'Bread')

  step('the families screen')
  await a.getByRole('link', { name: '← All lists' }).click()
  await a.getByRole('heading', { name: 'Your lists' }).waitFor()
  await a.getByText('0 needed · 1 in the cart · 0 purchased').waitFor()
  await axe(a, 'families')
  await a.screenshot({ path: join(shots, 'families.png'), fullPage: true })
}

const session = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('larder.session')))

async function sessionScenario (browser) {
  step('two members on one list, with tokens that live seconds')
  const { a, b, listId } = await familyOnOneList(browser)
  const first = await session(a)

  step('the token expires and is refreshed; edits keep being saved')
  await a.waitForFunction((old) => JSON.parse(localStorage.getItem('larder.session')).access_token !== old, first.access_token)
  await a.waitForFunction((at) => Date.now() > Date.parse(at) + 1000, first.access_token_expires_at, { timeout: 60_000 })
  await addItem(a, 'Tea')
  await item(b, 'Tea').waitFor()
  await item(a, 'Tea').waitFor()
  await a.locator('[data-state="saved"]').waitFor()
  await check('stored', listId, 'Tea')

  step('a removed member is told, and not reconnected')
  let sockets = 0
  b.on('websocket', () => { sockets++ })
  const bobId = (await session(b)).user.id
  const removed = await a.evaluate(async ({ listId, bobId }) => {
    const token = JSON.parse(localStorage.getItem('larder.session')).access_token
    const headers = { Authorization: `Bearer ${token}` }
    const list = await (await fetch(`/v1/lists/${listId}`, { headers })).json()
    const answer = await fetch(`/v1/families/${list.family_id}/members/${bobId}`, { method: 'DELETE', headers })
    return answer.status
  }, { listId, bobId })
  if (removed !== 204) throw new Error(`removing Bob answered ${removed}`)
  await b.locator('[data-state="stopped"]').waitFor()
  await b.getByText('You no longer have access to this list.').waitFor()
  const after = sockets
  await b.waitForTimeout(3000)
  if (sockets !== after) throw new Error(`the removed member reconnected ${sockets - after} times`)
  await b.screenshot({ path: join(shots, 'revoked.png'), fullPage: true })

  step('a sign-in ended elsewhere signs the app out at its next refresh')
  await a.evaluate(async () => {
    const s = JSON.parse(localStorage.getItem('larder.session'))
    await fetch('/v1/auth/logout', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${s.access_token}` },
      body: JSON.stringify({ refresh_token: s.refresh_token })
    })
  })
  await a.getByRole('heading', { name: 'Sign in' }).waitFor({ timeout: 20_000 })
  await a.screenshot({ path: join(shots, 'signed-out.png'), fullPage: true })
}

async function vendorScenario (browser) {
  step('a family with a list of two items')
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } })
  const a = await context.newPage()
  a.on('pageerror', (e) => console.error(`e2e: page error: ${e.message}`))
  await signUp(a, 'Ann', `ann-${unique}@larder.test`)
  await a.getByLabel('Family name', { exact: true }).fill('Smiths')
  await a.getByRole('button', { name: 'Create family' }).click()
  await a.getByRole('heading', { name: 'Smiths' }).waitFor()
  await a.getByLabel('New list', { exact: true }).fill('Weekly shop')
  await a.getByRole('button', { name: 'Add list' }).click()
  await a.getByRole('heading', { name: 'Weekly shop' }).waitFor()
  const listId = a.url().split('/').pop()
  await addItem(a, 'Milk', '2 l')
  await addItem(a, 'Eggs', '12')
  await item(a, 'Eggs').waitFor()
  await a.locator('[data-state="saved"]').waitFor()

  step('a vendor')
  await a.getByRole('link', { name: '← All lists' }).click()
  await a.getByRole('link', { name: 'Vendors' }).click()
  await a.getByLabel('Vendor name', { exact: true }).fill('Corner shop')
  await a.getByLabel('WhatsApp number', { exact: true }).fill('+44 7700 900123')
  await a.getByRole('button', { name: 'Add vendor' }).click()
  await a.locator('li[data-vendor="Corner shop"]').waitFor()
  await axe(a, 'vendors')

  step('the list sent on WhatsApp, delivered, answered')
  await a.getByRole('link', { name: '← All lists' }).click()
  await a.getByRole('link', { name: 'Weekly shop' }).click()
  await a.getByLabel('Vendor', { exact: true }).selectOption({ label: 'Corner shop' })
  await a.getByRole('button', { name: 'Send on WhatsApp' }).click()
  await a.locator('li.share[data-share-status="sent"]').waitFor()
  await check('shared', listId, '447700900123')
  await a.locator('li.share[data-share-status="delivered"]').waitFor()
  await a.getByText('Yes, all in stock').waitFor()

  step('an order from the share, confirmed')
  await a.getByRole('button', { name: 'Place order with this vendor' }).click()
  await a.locator('li.order[data-order-status="placed"]').waitFor()
  await a.getByRole('button', { name: 'Mark confirmed' }).click()
  await a.locator('li.order[data-order-status="confirmed"]').waitFor()
  await check('ordered', listId, 'confirmed')
  await axe(a, 'list with vendors')
  await a.screenshot({ path: join(shots, 'vendor.png'), fullPage: true })

  step('search across the family\'s lists')
  await a.getByRole('link', { name: '← All lists' }).click()
  await a.getByRole('link', { name: 'Search items' }).click()
  await a.getByLabel('Search the family\'s lists', { exact: true }).fill('mil')
  await a.getByRole('button', { name: 'Search', exact: true }).click()
  await a.getByRole('list', { name: 'Found items' }).getByRole('link', { name: 'Milk' }).waitFor()
  await axe(a, 'search')
  await a.screenshot({ path: join(shots, 'search.png'), fullPage: true })
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ['--no-sandbox', '--disable-dev-shm-usage']
})
try {
  const scenarios = { family: familyScenario, session: sessionScenario, vendor: vendorScenario }
  await scenarios[process.env.SCENARIO || 'family'](browser)
  console.log('DONE')
} finally {
  await browser.close()
}
process.exit(0)
