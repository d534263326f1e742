#!/usr/bin/env bash
# Checks the README's two commands on a fresh Debian 12 root, as far as a
# machine without a Rust toolchain inside the root allows: a minimal root
# (debootstrap) in a network namespace of its own (so its PostgreSQL and
# Redis ports are its own), with a stand-in `cargo` that only answers
# `cargo nextest --version`.
#
#   1. scripts/test-deps.sh installs and starts PostgreSQL, Redis, Node.js
#      and the interop packages, and lets the tests log in; run again, it
#      does nothing;
#   2. the `larder` binary built here (target/debug or target/release),
#      started with no configuration in an empty folder, serves a list that
#      the unmodified yjs + y-websocket clients of tests/interop sync.
#
# Not part of the test command: needs root, debootstrap, iproute2, python3
# and the Debian and npm registries. The root is kept in $FRESH_ROOT
# (default /var/tmp/larder-fresh) and reused by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
root="${FRESH_ROOT:-/var/tmp/larder-fresh}"
ns=larder-fresh
binary="$(ls -t target/release/larder target/debug/larder 2>/dev/null | head -n 1)"
[ -n "$binary" ] || { echo "build larder first (cargo build -p larder-server)" >&2; exit 1; }

if [ ! -x "$root/bin/bash" ]; then
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
fi

# A network namespace reaching the registries through a proxy on the host.
cleanup() {
    [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null || true
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    umount "$root/dev/shm" "$root/dev" "$root/proc" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add "$ns"
ip link add lf0 type veth peer name lf1
ip link set lf1 netns "$ns"
ip addr add 10.231.0.1/24 dev lf0 && ip link set lf0 up
ip netns exec "$ns" ip addr add 10.231.0.2/24 dev lf1
ip netns exec "$ns" ip link set lf1 up
ip netns exec "$ns" ip link set lo up
python3 scripts/forward-proxy.py 10.231.0.1 3128 &
proxy_pid=$!
proxy=http://10.231.0.1:3128
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/dev/shm"
printf 'Acquire::http::Proxy "%s";\nAcquire::https::Proxy "%s";\n' "$proxy" "$proxy" \
    > "$root/etc/apt/apt.conf.d/01proxy"
# Certificate authorities this machine trusts locally (an intercepting
# proxy's, say) are trusted in the root too.
mkdir -p "$root/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$root" update-ca-certificates >/dev/null 2>&1 || true

rm -rf "$root/larder" && git clone -q "$repo" "$root/larder"
cp "$binary" "$root/usr/local/bin/larder"
cat > "$root/usr/local/bin/cargo" <<'STANDIN'
#!/bin/sh
# Stand-in: this root checks the services, not the Rust toolchain.
if [ "$1" = nextest ] && [ "$2" = --version ]; then echo "cargo-nextest (stand-in)"; exit 0; fi
echo "cargo stand-in cannot run: $*" >&2; exit 1
STANDIN
chmod +x "$root/usr/local/bin/cargo"
cat > "$root/larder/check.mjs" <<'CHECK'
const base = 'http://127.0.0.1:8080'
const post = async (path, body, token) => {
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  })
  const json = await res.json()
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(json)}`)
  return json
}
const account = await post('/v1/auth/signup', { email: 'fresh@larder.test', password: 'a fresh machine password', display_name: 'Fresh' })
const family = await post('/v1/families', { name: 'Home' }, account.access_token)
const list = await post(`/v1/families/${family.id}/lists`, { name: 'Weekly' }, account.access_token)
console.log(`${account.access_token} ${list.id}`)
CHECK

ip netns exec "$ns" chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    http_proxy="$proxy" https_proxy="$proxy" HTTP_PROXY="$proxy" HTTPS_PROXY="$proxy" \
    /bin/bash -euo pipefail -c '
cd /larder
./scripts/test-deps.sh
./scripts/test-deps.sh
echo "check: the second run found everything in place"
psql postgres://postgres@127.0.0.1:5432/postgres -Atqc "SELECT 1" >/dev/null
redis-cli -h 127.0.0.1 ping | grep -q PONG
rm -rf /srv/home && mkdir -p /srv/home && cd /srv/home
larder serve > serve.log 2>&1 &
for _ in $(seq 1 100); do
    node -e "fetch(\"http://127.0.0.1:8080/readyz\").then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))" && break
    sleep 0.2
done
read -r token list < <(node /larder/check.mjs)
cd /larder/tests/interop
LARDER_TOKEN=$token node interop.mjs ws://127.0.0.1:8080/v1/sync "$list" > /srv/home/items.json
node -e "const n = Object.keys(require(\"/srv/home/items.json\")).length; if (n !== 72) { console.error(\"expected 72 items, got\", n); process.exit(1) }"
test -s /srv/home/larder-data/larder.db
grep -q "SQLite file ./larder-data/larder.db" /srv/home/serve.log
grep -q "in process" /srv/home/serve.log
kill %1
echo "check: the zero-configuration server served the JavaScript clients from ./larder-data/larder.db"
'
