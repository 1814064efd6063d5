#!/usr/bin/env bash
# Runs every test of Switchboard on a fresh machine: installs what the tests need
# (Debian packages, PyPI and npm packages), then runs the whole Cargo workspace's tests and builds
# the fuzz targets so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools some tests drive as independent peers (sox, espeak-ng, python3).
if [ -f scripts/codecs-test-deps.sh ]; then
    bash scripts/codecs-test-deps.sh
fi

# streamdouble: an independent Twilio Media Streams simulator that places calls in the
# voice tests (with numpy, pyyaml and websockets).
if ! command -v streamdouble >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check "streamdouble==0.3.0"
fi

# nats-server (Debian's package, with JetStream): the cluster tests start one on loopback
# beside three gateway nodes.
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    bash scripts/apt-install.sh test nats-server
fi

# Node.js and the npm packages of the Bot Framework interop tests (botframework-directlinejs
# and the rest), exactly as their lock files say.
bash scripts/interop-test-deps.sh

cargo test --workspace --locked

if [ -f codecs/fuzz/Cargo.toml ]; then
    cargo build --locked --manifest-path codecs/fuzz/Cargo.toml
fi
