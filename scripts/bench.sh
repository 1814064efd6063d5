#!/usr/bin/env bash
# Benchmarked throughput runs (BENCHMARKS.md, "Throughput"): builds the gateway and the load
# generator in release, starts the gateway and the echo baseline on loopback, runs every
# scenario against both with the same connections and payloads, and writes BENCHMARKS.md-ready
# tables (target/bench/throughput.md), the raw figures (results.json) and a chart of latency
# against offered load (latency.svg). chat-relay runs the gateway twice, with the durable
# SQLite store of bench/gateway.toml and with a copy differing only in `store = "memory"`;
# chat-relay and open-loop also run against nats-server (core NATS over its WebSocket
# listener, on loopback) as a peer, installed here from Debian's package when missing;
# voice sweeps 100, 250, 500 and 1,000 concurrent calls twice, with callers speaking the native
# protocol and Twilio's Media Streams, and goes on doubling (up to 4,000 calls) while the echo
# baseline still holds. `cluster` (opt-in) runs chat-relay and handoff against the gateway
# alone, as a one-node cluster and as three nodes on nats-server with JetStream.
#
#   bash scripts/bench.sh                              # the default run: about 4½ minutes after the build
#   bash scripts/bench.sh --idle-conversations 100000  # the 100,000-conversation memory target
#   bash scripts/bench.sh --scenarios chat-relay --duration 30
#   bash scripts/bench.sh --scenarios voice --voice-calls 200,300,400 --voice-duration 10
#   bash scripts/bench.sh --scenarios recovery          # kill -9 and restart with 100,000 open conversations
#                                                       # (the gateway alone; not in the default run)
#   bash scripts/bench.sh --scenarios cluster           # the gateway alone, 1 node and 3 nodes on JetStream
#                                                       # (not in the default run)
#   bash scripts/bench.sh --scenarios voice --voice-dialects twilio --voice-max-calls 0
#   bash scripts/bench.sh --scenarios voice --voice-bot-audio pcmu/8000  # a µ-law bot: no transcoding (any SPEC §5.3 format)
#
# Every flag is passed to switchboard-load (`target/release/switchboard-load --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p switchboard -p switchboard-bench --bins

# The peer of chat-relay and open-loop, and cluster's JetStream server (`--nats PATH` picks
# another binary). Debian puts it in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin"
command -v nats-server >/dev/null || bash scripts/apt-install.sh bench nats-server

# Each connection is a file descriptor on both sides. Take as many as the hard limit allows
# (and more where we are allowed to raise it: root with CAP_SYS_RESOURCE). Runs above ~28,000
# connections also spread their source addresses over 127.0.0.2, 127.0.0.3, … by themselves.
want=1048576
if ! ulimit -n "$want" 2>/dev/null; then
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ]; then hard=$want; fi
    ulimit -n "$hard"
fi
echo "open-file limit: $(ulimit -n)" >&2

label="switchboard $(git describe --always --dirty 2>/dev/null || echo unknown), $(rustc --version)"
exec "${CARGO_TARGET_DIR:-target}/release/switchboard-load" --out target/bench --label "$label" "$@"
