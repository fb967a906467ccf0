#!/usr/bin/env bash
# Fetches a Debian cloud kernel (and its modules) for the lab's NixOS-shaped
# example systems, into a cache shared by every checkout on this machine.
# Prints the directory; it holds vmlinuz and lib/modules/<version>/.
set -euo pipefail
cache=${NIXIE_KERNEL_CACHE:-/var/cache/nixie-lab/kernel}
if [ -f "$cache/vmlinuz" ] && [ -d "$cache/lib/modules" ]; then
  echo "$cache"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# linux-image-cloud-amd64 is a meta package: its dependency is the real kernel
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -q >/dev/null
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
apt-get download -q "$pkg" >/dev/null
mkdir -p x && dpkg-deb -x ./*.deb x
mkdir -p "$cache.new/lib"
cp x/boot/vmlinuz-* "$cache.new/vmlinuz"
cp -a x/lib/modules "$cache.new/lib/" 2>/dev/null || cp -a x/usr/lib/modules "$cache.new/lib/"
ls "$cache.new/lib/modules" > "$cache.new/version"
rm -rf "$cache"; mv "$cache.new" "$cache"
echo "$cache"
