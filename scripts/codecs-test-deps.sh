#!/usr/bin/env bash
# Installs what the codecs tests need beyond Rust: python3 (with audioop, to regenerate the
# G.711 golden vectors), sox (an independent DTMF tone generator) and espeak-ng (speech for
# the DTMF talk-off test). Idempotent: installs only what is missing, and runs
# `apt-get update` at most once. Meant for CI and fresh developer machines (Debian, as root).
set -euo pipefail

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "codecs-test-deps: python3, sox and espeak-ng already present"
    exit 0
fi

bash "$(dirname "$0")/apt-install.sh" codecs-test-deps "${missing[@]}"
