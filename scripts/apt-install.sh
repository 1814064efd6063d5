#!/usr/bin/env bash
# Installs Debian packages for the test scripts: `bash scripts/apt-install.sh WHO PKG...`
# (WHO prefixes the message). Uses sudo when not root; non-interactive.
set -euo pipefail
who=$1
shift
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "$who: installing $*"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "$@"
