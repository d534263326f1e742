// The signed-in session and the REST API. Tokens live in localStorage;
// the access token is refreshed a minute before it expires and when the
// server says it expired (401 on REST, close code 4440 on a socket). A
// refresh the server refuses signs the user out.

const KEY = 'larder.session'
const MARGIN_MS = 60_000

let session = load()
let refreshing = null
let timer = null
const listeners = new Set()

function load () {
  try {
    return JSON.parse(localStorage.getItem(KEY)) || null
  } catch {
    return null
  }
}

function keep (next) {
  session = next && { received_at: Date.now(), ...next }
  if (session) localStorage.setItem(KEY, JSON.stringify(session))
  else localStorage.removeItem(KEY)
  schedule()
  for (const f of listeners) f(session)
}

/** Refresh this long before expiry: a minute, or a fifth of a short token's life. */
function margin () {
  const life = Date.parse(session.access_token_expires_at) - (session.received_at || Date.now())
  return Math.min(MARGIN_MS, Math.max(life / 5, 0))
}

function schedule () {
  clearTimeout(timer)
  if (!session) return
  const due = Date.parse(session.access_token_expires_at) - margin() - Date.now()
  timer = setTimeout(() => { refresh().catch(() => {}) }, Math.max(due, 1_000))
}

/** Calls `fn` with the session whenever it changes (null: signed out). */
export function onSession (fn) {
  listeners.add(fn)
  return () => listeners.delete(fn)
}

export const current = () => session
export const user = () => session && session.user

/** Why a request failed, with the server's code and message. */
export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

async function call (method, path, body, token) {
  const headers = { Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (token) headers.Authorization = `Bearer ${token}`
  let response
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch {
    throw new ApiError(0, 'offline', 'The server cannot be reached. Check your connection.')
  }
  const text = await response.text()
  const json = text ? JSON.parse(text) : null
  if (!response.ok) {
    const error = (json && json.error) || {}
    throw new ApiError(response.status, error.code || 'http_error', error.message || response.statusText)
  }
  return json
}

/** A fresh access token (refreshed first when it is about to expire). */
export async function accessToken () {
  if (!session) throw new ApiError(401, 'signed_out', 'Sign in first.')
  if (Date.parse(session.access_token_expires_at) - margin() <= Date.now()) await refresh()
  return session.access_token
}

/** Trades the refresh token for new tokens; one refresh at a time. */
export function refresh () {
  if (!refreshing) {
    const spent = session
    refreshing = (async () => {
      if (!spent) throw new ApiError(401, 'signed_out', 'Sign in first.')
      try {
        keep(await call('POST', '/v1/auth/refresh', { refresh_token: spent.refresh_token }))
      } catch (e) {
        if (e.status === 401) keep(null)
        throw e
      }
    })().finally(() => { refreshing = null })
  }
  return refreshing
}

/** An API call with the access token, refreshed once on a 401. */
export async function api (method, path, body) {
  try {
    return await call(method, path, body, await accessToken())
  } catch (e) {
    if (e.status !== 401 || !session) throw e
    await refresh()
    return call(method, path, body, session.access_token)
  }
}

export async function signUp (email, password, displayName) {
  keep(await call('POST', '/v1/auth/signup', { email, password, display_name: displayName }))
}

export async function signIn (email, password) {
  keep(await call('POST', '/v1/auth/login', { email, password }))
}

export async function signOut () {
  const old = session
  keep(null)
  if (old) {
    await call('POST', '/v1/auth/logout', { refresh_token: old.refresh_token }, old.access_token).catch(() => {})
  }
}

schedule()
