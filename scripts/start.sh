#!/usr/bin/env bash
# start.sh - quick start: install what is missing, build tern, and run it
# with the shipped configuration (etc/tern.toml).
#
# tern runs in the foreground, a relay for this machine's clients on
# 127.0.0.1:2525 with its spool in var/spool; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
make -j"$(nproc)" all
build/tern config check -c etc/tern.toml
exec build/tern serve -c etc/tern.toml
