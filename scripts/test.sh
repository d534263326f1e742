#!/usr/bin/env bash
# Larder's test command. On a fresh Debian machine with only a Rust
# toolchain it installs what the tests need (cargo-nextest, PostgreSQL,
# Redis, Node.js and the interop test's npm packages), starts PostgreSQL
# and Redis when they are not running, and runs every test: the whole
# workspace on PostgreSQL + Redis, then the end-to-end suites again on the
# single-node default (SQLite, in-process relay).
#
# Extra arguments go to both `cargo nextest run` invocations.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test.sh: %s\n' "$*" >&2; }

./scripts/test-deps.sh

# The tests -------------------------------------------------------------------------
say "every test, on PostgreSQL + Redis"
cargo nextest run --workspace "$@"
say "the end-to-end suites again, on the single-node default (SQLite)"
LARDER_TEST_DATABASE=sqlite cargo nextest run --workspace \
    -E 'package(larder-tests) | package(larder-server)' "$@"
