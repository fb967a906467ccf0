#!/usr/bin/env bash
# Installs the Debian packages the appliance, its lab and its tests need.
# Idempotent; run as root. Services the packages ship are kept from starting
# on the host (the lab and the tests start their own, inside namespaces).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t wanted < <(grep -v '^\s*#' "$here/apt-packages.txt" | grep -v '^\s*$')
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: all ${#wanted[@]} packages present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup-system: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "setup-system: installing ${missing[*]}"
policy=${NIXIE_POLICY_RC_D:-/usr/sbin/policy-rc.d}  # overridable for the tests
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1
fi
trap '[ $made_policy = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Packaged daemons must not hold the host's ports 53/67/69/80. policy-rc.d kept
# them from starting; should one have started anyway, stop it: only a daemon in
# the host's network namespace whose parent is init, never a reference server a
# test or the lab runs in a namespace of its own.
# In a container /proc/1 may be unreadable: then there is no host namespace to
# tell apart, and nothing to stop (the container started no packaged daemon).
host_net=$(readlink /proc/1/ns/net 2>/dev/null || true)
[ -n "$host_net" ] || exit 0
for name in in.tftpd kea-dhcp4 nginx dnsmasq; do
  for pid in $(pgrep -x "$name" || true); do
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$host_net" ] || continue
    [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = 1 ] || continue
    kill "$pid" 2>/dev/null || true
  done
done
