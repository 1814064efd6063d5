#!/usr/bin/env bash
# Runs every test of Switchboard on a fresh machine: installs what the tests need
# (Debian packages, PyPI packages), then runs the whole Cargo workspace's tests and builds
# the fuzz targets so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools some tests drive as independent peers (sox, espeak-ng, python3).
if [ -f scripts/codecs-test-deps.sh ]; then
    bash scripts/codecs-test-deps.sh
fi

cargo test --workspace --locked

if [ -f codecs/fuzz/Cargo.toml ]; then
    cargo build --locked --manifest-path codecs/fuzz/Cargo.toml
fi
