// Keeps the app's shell so a list opened once opens with no network. The
// build fills in the files and a version; a new build replaces the cache.
const SHELL = __SHELL__
const CACHE = 'larder-shell-' + __VERSION__

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()))
})

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('larder-shell-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim())
  )
})

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url)
  // The API, the sync socket and vendor pages always go to the server.
  if (event.request.method !== 'GET' || url.origin !== location.origin ||
      url.pathname.startsWith('/v1') || url.pathname.startsWith('/s/')) {
    return
  }
  if (event.request.mode === 'navigate') {
    // The page: fresh when online, the kept copy when not.
    event.respondWith(fetch(event.request).catch(() => caches.match('/index.html')))
    return
  }
  event.respondWith(caches.match(event.request).then((hit) => hit || fetch(event.request)))
})
