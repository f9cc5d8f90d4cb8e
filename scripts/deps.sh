#!/usr/bin/env bash
# deps.sh - install the Debian packages tern needs, when they are missing.
#   scripts/deps.sh build   what building tern needs
#   scripts/deps.sh test    that, plus what the test suite needs
# Only missing packages are installed; an up-to-date machine does nothing.
set -euo pipefail

build_pkgs=(gcc make libc6-dev libevent-dev libunbound-dev libjansson-dev libssl-dev libcurl4-openssl-dev dns-root-data)
test_pkgs=(libcmocka-dev clang libclang-rt-14-dev python3 python3-pytest python3-aiosmtpd openssl
	   postfix dovecot-lmtpd dovecot-core nsd nftables dnsutils iproute2 nginx-light ldnsutils swaks
	   libnet-ssleay-perl)

want=("${build_pkgs[@]}")
if [ "${1:-build}" = test ]; then
	want+=("${test_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Packages with a service (nginx) must not start it: the tests start
# their own servers on loopback, by PID. Debian asks policy-rc.d.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod +x /usr/sbin/policy-rc.d
	trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
