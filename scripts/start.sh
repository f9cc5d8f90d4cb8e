#!/usr/bin/env bash
# start.sh - quick start: install what is missing, build tern, and run it
# with the shipped configuration (etc/tern.toml).
#
# The server itself is not built yet: until it is, this checks the shipped
# configuration and prints its effective settings.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
make -j"$(nproc)" all
build/tern config check -c etc/tern.toml
build/tern config dump -c etc/tern.toml
