#!/usr/bin/env bash
# Installs and starts what Larder's tests need, on a fresh Debian machine
# with only a Rust toolchain: cargo-nextest, PostgreSQL at 127.0.0.1:5432
# (user postgres, no password on loopback), Redis at 127.0.0.1:6379,
# Node.js, the interop test's npm packages, the web app (built) and
# Chromium for its browser tests. Does nothing that is
# already there. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test-deps.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        say "needs root to run: $*"
        exit 1
    fi
}

apt_updated=no
apt_install() {
    if [ "$apt_updated" = no ]; then
        as_root apt-get update -qq
        apt_updated=yes
    fi
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# cargo-nextest ------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

# PostgreSQL at 127.0.0.1:5432, user postgres without a password ----------------
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
pg_login() { psql "postgres://postgres@127.0.0.1:5432/postgres" -Atqc 'SELECT 1' >/dev/null 2>&1; }
if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if ! pg_up; then
        apt_install postgresql
    fi
fi
if ! pg_up; then
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || { say "PostgreSQL did not start"; exit 1; }
fi
if ! pg_login; then
    # A packaged cluster asks for a password on TCP; the tests log in as
    # postgres on loopback without one.
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    say "letting postgres log in on loopback without a password ($hba)"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust # added by larder scripts/test-deps.sh\nhost all postgres ::1/128 trust # added by larder scripts/test-deps.sh' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    for _ in $(seq 1 10); do pg_login && break; sleep 1; done
    pg_login || { say "cannot log in to PostgreSQL as postgres at 127.0.0.1:5432"; exit 1; }
fi

# Redis at 127.0.0.1:6379 ---------------------------------------------------------
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! command -v redis-server >/dev/null; then
    redis_up || apt_install redis-server
fi
if ! redis_up; then
    say "starting Redis"
    mkdir -p "${TMPDIR:-/tmp}/larder-redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "${TMPDIR:-/tmp}/larder-redis" --logfile "${TMPDIR:-/tmp}/larder-redis/redis.log"
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
    redis_up || { say "Redis did not start"; exit 1; }
fi

# Node.js and the interop test's packages (pinned by its lock file) --------------
if ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error

# The web app: its packages (pinned by web/package-lock.json), a fresh build
# (the browser tests load it from web/dist), and Chromium to run it in -----
npm ci --prefix web --no-audit --no-fund --loglevel=error
npm run build --prefix web --silent
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    apt_install chromium
fi
