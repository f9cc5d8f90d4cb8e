#!/usr/bin/env bash
# test.sh - the whole test suite: install what is missing, build tern (release
# and ASan+UBSan) and the fuzz harnesses, then run every suite. The last line
# is the runner's summary: "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
make -j"$(nproc)" all unit fuzz >/dev/null
# Debian's interpreter: the test libraries (python3-pytest, later python3-aiosmtpd) are
# installed for it, whatever other python3 comes first on PATH.
exec /usr/bin/python3 tests/run_all.py
