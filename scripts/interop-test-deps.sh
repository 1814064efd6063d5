#!/usr/bin/env bash
# Installs what the Bot Framework interoperability tests need beyond Rust: Node.js with npm
# (from Debian's packages when `node` is missing; the tests need Node 18 or later), then the
# exact npm packages of every project under tests/interop/ with `npm ci` (from its
# committed package-lock.json). Idempotent; meant for CI and fresh developer machines
# (Debian, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    bash scripts/apt-install.sh interop-test-deps nodejs npm
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "interop-test-deps: Node.js $(node --version) is too old; the interop tests need 18 or later" >&2
    exit 1
fi

for lock in tests/interop/*/package-lock.json; do
    [ -f "$lock" ] || continue
    dir=$(dirname "$lock")
    echo "interop-test-deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done
