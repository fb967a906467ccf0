# NixOS-shaped systems without nixpkgs: every derivation's builder is a copy
# of busybox (materialised into ./bbdir by lab/flake.py), the kernel
# is a prebuilt Debian kernel with its virtio modules (./kernel), the boot
# loaders an install writes are Debian's SYSLINUX and GRUB (./bootloaders).
{ src }:
let
  system = "x86_64-linux";
  busybox = builtins.path { path = ./bbdir; name = "busybox"; };
  bb = "${busybox}/bin/busybox";
  kernel = builtins.path { path = ./kernel; name = "linux-lab"; };
  virtioModules = [ "virtio_ring" "virtio" "virtio_pci_modern_dev" "virtio_pci_legacy_dev"
                    "virtio_pci" "failover" "net_failover" "virtio_net" ];
  # what stage 1 loads to reach a virtio disk (ext4 is built into the kernel)
  diskModules = [ "virtio_ring" "virtio" "virtio_pci_modern_dev" "virtio_pci_legacy_dev"
                  "virtio_pci" "virtio_blk" ];
  # what a cached netboot's stage 1 loads besides: the NIC, to fetch the store paths
  cachedModules = [ "failover" "net_failover" "virtio_net" ];
  # what the installer adds: the disk, and FAT for the ESP
  installModules = [ "virtio_blk" "fat" "vfat" "nls_cp437" "nls_utf8" "nls_ascii" ];

  # A derivation whose builder is busybox sh; applets are linked into the
  # build directory first so scripts can call them by name.
  run = name: script: derivation {
    inherit name system;
    builder = bb;
    args = [ "sh" "-e" "-c" ''
      ${bb} mkdir -p "$TMPDIR/.bin"
      ${bb} --install -s "$TMPDIR/.bin"
      export PATH="$TMPDIR/.bin"
      ${script}
    '' ];
  };

  # udhcpc's script (stage 2's, and cached stage 1's with its own busybox as interpreter)
  udhcpcBody = ''
    case "$1" in
      bound|renew)
        ifconfig "$interface" "$ip" netmask "$subnet" up
        if [ -n "$router" ]; then
          for r in $router; do route add default gw "$r" dev "$interface"; break; done
        fi
        echo "udhcpc: $interface $ip"
        ;;
      deconfig) ifconfig "$interface" 0.0.0.0 ;;
    esac
  '';

  # Booted over IPv6 (nixie.api=http://[...]): wait up to 20 s for eth0's global address,
  # the one the router advertises (SLAAC; no DHCPv4). Stage 1 and stage 2 both run it.
  slaacWait = ''
    i=0
    while ! ip -6 addr show dev eth0 | grep 'scope global' | grep -qv tentative \
        && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done'';

  # The disk layout an install applies, and a cached netboot creates when the disk has
  # none, and their agent report (`post`, with $api and $token): one shell library both
  # source. `disk_layout DEVICE ESP_MIB NEED_MIB` checks the
  # disk's size, partitions it (MBR: an ESP of ESP_MIB, the root on the rest) and formats
  # both, reporting through the caller's `step` and `fail`; it sets $part.
  diskLayout = run "nixie-lab-disk-layout" ''
    cat > "$out" <<'S'
post() {  # EVENT MESSAGE: one agent report; the router's answer lands in /tmp/answer
  [ -n "$api" ] || return 0
  m=$(echo "$2" | tr -d '"\\' | tr '\n' ' ')
  wget -q -O /tmp/answer --header "Authorization: Bearer $token" \
    --header "Content-Type: application/json" \
    --post-data "{\"event\":\"$1\",\"message\":\"$m\"}" "$api/api/v1/agent/events"
}
disk_wait() { i=0; while [ ! -b "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; }
disk_part() { case "$(basename "$1")" in *[0-9]) echo "$1"p ;; *) echo "$1" ;; esac; }
disk_layout() {
  device=$1; esp_mib=$2; need_mib=$3
  part=$(disk_part "$device")
  size_mib=0
  [ -b "$device" ] && size_mib=$(( $(cat /sys/block/$(basename "$device")/size) / 2048 ))
  step "partition: $device ($size_mib MiB): ESP $esp_mib MiB, root ext2 on the rest"
  [ -b "$device" ] || fail "no disk $device"
  [ "$size_mib" -ge "$need_mib" ] || \
    fail "disk $device is too small: $size_mib MiB, this system needs at least $need_mib MiB"
  # fdisk would put a partition with a default start into the gap before the ESP
  root_start=$(( 2048 + esp_mib * 2048 ))
  printf 'o\nn\np\n1\n2048\n+%sM\nt\nef\nn\np\n2\n%s\n\na\n2\nw\n' "$esp_mib" "$root_start" \
    | fdisk "$device" >/tmp/fdisk.log 2>&1 || fail "fdisk: $(tail -n 1 /tmp/fdisk.log)"
  disk_wait "$part"2
  [ -b "$part"2 ] || fail "the new partitions of $device did not appear"
  step "format: ''${part}1 FAT (ESP), ''${part}2 ext2 (root)"
  mkdosfs -n NIXIE-ESP "$part"1 >/tmp/mkdosfs.log 2>&1 || fail "mkdosfs: $(tail -n 1 /tmp/mkdosfs.log)"
  mke2fs -F -L nixie-root "$part"2 >/tmp/mke2fs.log 2>&1 || fail "mke2fs: $(tail -n 1 /tmp/mke2fs.log)"
}
S
  '';

  # The store on the disk of a cached netboot: a shell library its stage 1 sources (and
  # tests/unit/test_cached_content_check.py runs with busybox against a real router).
  # The caller sets $root (the disk's root filesystem, mounted), $work (scratch space in
  # RAM), $api, $tb (the system's basename), $fetch_tries and $verify (`content` or
  # `sizes`), and defines `step` and `fail`. Per path the disk keeps, in
  # $root/nix/.nixie: manifests/<basename> (types, names, sizes, links: checked every
  # boot, reads inodes only) and sha256/<basename> (each regular file's sha256, busybox
  # `sha256sum` lines relative to /nix/store: checked with nixie.verify=content, reads
  # every byte), both written when the path is moved in.
  cachedStore = ''
    get() {  # URL FILE: retried while the router builds (503) or is away; sets $why
      tries=0
      until wget -q -O "$2" "$1" 2>$work/wget.err; do
        tries=$((tries + 1)); why="$(tail -n 1 $work/wget.err)"
        [ $tries -lt $fetch_tries ] || { why="$fetch_tries tries, the last: $why"; return 1; }
        echo "NIXIE-CACHED-RETRY $tries of $fetch_tries: $1: $why"
        sleep 2
      done
    }
    # What a path is, cheaply: every file's type and name, each regular file's size and
    # each link's target (stat reads inodes, no content): written when the path is moved
    # in, compared on every boot.
    manifest() {  # STORE/NAME (a directory, or a path that is one file)
      (cd "''${1%/*}" && b="''${1##*/}" && { find "$b" -type d; find "$b" ! -type d -exec stat -c '%s %N' {} +; } | sort)
    }
    # What a path holds: each regular file's sha256 (`sha256sum -c` input, relative to
    # the store); no lines for a path without regular files.
    sums() {  # STORE/NAME
      (cd "''${1%/*}" && find "''${1##*/}" -type f -exec sha256sum {} + | sort -k 2)
    }
    # The system's own path, fetched first (its nixie-disk names the disk layout):
    # unpacked into $work/top; sets $got_bytes.
    fetch_top() {
      mkdir -p $work/top
      get "$api/boot/$tb/path/$tb.cpio" $work/top.cpio || fail "cannot fetch $tb from $api: $why"
      (cd $work/top && cpio -i -d -m < $work/top.cpio 2>/dev/null) || fail "cannot unpack $tb"
      got_bytes=$(wc -c < $work/top.cpio)
    }
    # Each path of the listing the disk holds that is not as it was moved in is removed,
    # to be fetched again: its manifest differs (or is missing), or, with
    # nixie.verify=content, a file's content differs from its sha256 sums (or it has
    # none). Sets $damaged and $checked (what was compared, for the report).
    store_dirs() { store=$root/nix/store; man=$root/nix/.nixie/manifests; sha=$root/nix/.nixie/sha256; mkdir -p $man $sha; }
    store_check() {  # LISTING ("<basename> <bytes>" per line)
      store_dirs
      damaged=0; c0=$(uptime_cs)
      while read b n; do
        [ -e $store/$b ] || continue
        if ! manifest $store/$b | cmp -s - $man/$b; then
          why="differs from its manifest"
        elif [ "$verify" = content ] && [ ! -r $sha/$b ]; then
          why="has no sha256 sums"
        elif [ "$verify" = content ] && [ -s $sha/$b ] \
            && ! (cd $store && sha256sum -c -s $sha/$b 2>/dev/null) </dev/null; then
          why="content differs from its sha256 sums"
        else
          continue
        fi
        step "damaged: $b $why: fetched again"
        rm -rf $store/$b $man/$b $sha/$b
        damaged=$((damaged + 1))
      done < "$1"
      checked="sizes checked"
      [ "$verify" = content ] && checked="content checked"
      checked="$checked in $(secs $c0 $(uptime_cs)) s"
    }
    # Each path of the listing the disk lacks: fetched as a plain newc archive, unpacked
    # beside the store, its manifest and sha256 sums written, then moved in whole (a cut
    # fetch leaves no half path). Sets $got and $kept, adds to $got_bytes.
    store_fetch() {  # LISTING
      store_dirs
      got=0; kept=0; tmp=$root/nix/.nixie/partial
      while read b n; do
        if [ -e $store/$b ]; then kept=$((kept + 1)); continue; fi
        rm -rf $tmp; mkdir -p $tmp/nix/store
        if [ "$b" = "$tb" ]; then
          cp -a $work/top/nix/store/$tb $tmp/nix/store/ || fail "copying $tb"
        else
          get "$api/boot/$tb/path/$b.cpio" $tmp/a.cpio || fail "fetching $b from $api failed: $why"
          [ "$(wc -c < $tmp/a.cpio)" -eq "$n" ] || fail "fetching $b from $api: short read"
          (cd $tmp && cpio -i -d -m < a.cpio 2>/dev/null) || fail "cannot unpack $b"
          got_bytes=$((got_bytes + n))
        fi
        manifest $tmp/nix/store/$b > $man/$b.new || fail "cannot list $b"
        sums $tmp/nix/store/$b > $sha/$b.new || fail "cannot hash $b"
        mv $tmp/nix/store/$b $store/$b || fail "cannot move $b into /nix/store"
        mv $man/$b.new $man/$b
        mv $sha/$b.new $sha/$b
        got=$((got + 1))
      done < "$1"
      rm -rf $tmp
    }
    uptime_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
    secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 100 }'; }  # CS0 CS1
  '';

  # Cached netboot (nixie.mode=cached): stage 1 keeps /nix/store on the disk. It reads
  # the system from init=, brings the NIC up (DHCPv4, or SLAAC when nixie.api= is an IPv6
  # URL), fetches the closure listing from the router
  # (<nixie.api>/boot/<system>/closure: "<basename> <bytes>" per path, the system last)
  # and the system's own path (its nixie-disk names the disk layout), mounts the disk's
  # root filesystem (creating the layout when there is none), checks each path the disk
  # holds (cachedStore's store_check: its manifest, and with nixie.verify=content its
  # files' sha256; a path that differs is dropped and fetched again), fetches each path
  # the disk lacks as a plain newc archive (/boot/<system>/path/<basename>.cpio),
  # unpacked beside the store and moved in whole (a cut fetch leaves no half path), then
  # switches root to the disk. Each fetch is tried nixie.fetch_tries= times (default
  # 20), 2 s apart. Failures are printed, reported (`failed` with the reason, retried
  # every 5 s for up to 5 min while the router is away) and stop the boot.
  cachedStage1 = ''
    system=''${init%/init}; tb=''${system##*/}
    for m in ${builtins.concatStringsSep " " (diskModules ++ cachedModules)}; do
      insmod /lib/modules/$m.ko 2>/dev/null
    done
    fetch_tries=20; verify=sizes
    for w in $(cat /proc/cmdline); do
      case "$w" in
        nixie.fetch_tries=*) fetch_tries="''${w#nixie.fetch_tries=}" ;;
        nixie.verify=*) verify="''${w#nixie.verify=}" ;;
      esac
    done
    case "$fetch_tries" in
      ""|*[!0-9]*|0) echo "NIXIE-CACHED bad nixie.fetch_tries=$fetch_tries (a count from 1): 20"
                     fetch_tries=20 ;;
    esac
    case "$verify" in
      sizes|content) ;;
      *) echo "NIXIE-CACHED bad nixie.verify=$verify (sizes or content): sizes"; verify=sizes ;;
    esac
    step() { echo "NIXIE-CACHED $1"; }
    fail() {  # the reason on the console, then `failed` to the router: retried while it is away
      echo "NIXIE-CACHED-FAILED $1"
      umount /sysroot 2>/dev/null
      n=0
      until post failed "cached boot failed: $1" 2>/tmp/post.err; do
        n=$((n + 1))
        if grep -q 'HTTP/1.[01] 4' /tmp/post.err || [ $n -ge 60 ]; then  # refused, or 5 min
          echo "NIXIE-REPORT-FAILED $(tail -n 1 /tmp/post.err)"
          while true; do sleep 3600; done
        fi
        [ $n -eq 1 ] && echo "NIXIE-REPORT-RETRY every 5 s: $(tail -n 1 /tmp/post.err)"
        sleep 5
      done
      echo "NIXIE-REPORTED-FAILED"
      while true; do sleep 3600; done
    }
    root=/sysroot; work=/tmp
    . /lib/nixie-disk-layout.sh
    . /lib/nixie-cached-store.sh
    [ -n "$api" ] || fail "no nixie.api= on the kernel command line"
    ip link set lo up
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    ip link set eth0 up
    case "$api" in
      *://\[*)  # booted over IPv6: the address the router advertises (SLAAC), no DHCPv4
        ${slaacWait}
        step "ipv6: $(ip -6 addr show dev eth0 | grep 'scope global')" ;;
      *) udhcpc -i eth0 -n -q -t 20 -T 1 -s /bin/udhcpc-script >/dev/null 2>&1 || echo "NIXIE-DHCP-FAILED" ;;
    esac
    t0=$(uptime_cs)
    get "$api/boot/$tb/closure" /tmp/closure || fail "cannot fetch the closure of $system from $api: $why"
    total=0; count=0
    while read b n; do total=$((total + n)); count=$((count + 1)); done < /tmp/closure
    fetch_top
    device=; esp_mib=
    [ -r /tmp/top/nix/store/$tb/nixie-disk ] || fail "$system declares no disk layout (nixie-disk)"
    . /tmp/top/nix/store/$tb/nixie-disk
    store_mib=$((total / 1048576))
    need_mib=$(( esp_mib + 1 + store_mib + store_mib / 4 + 16 ))
    disk_wait "$device"
    part=$(disk_part "$device")
    mkdir -p /sysroot
    if [ -b "$part"2 ] && mount -t ext4 "$part"2 /sysroot 2>/dev/null && [ -d /sysroot/nix/store ]; then
      step "layout: $device holds its root filesystem ''${part}2 with /nix/store"
    else
      umount /sysroot 2>/dev/null
      disk_layout "$device" "$esp_mib" "$need_mib"
      mount -t ext4 "$part"2 /sysroot || fail "cannot mount the new root filesystem ''${part}2"
      mkdir -p /sysroot/nix/store
    fi
    store_check /tmp/closure
    missing=0
    while read b n; do [ -e /sysroot/nix/store/$b ] || missing=$((missing + n)); done < /tmp/closure
    free_kib=$(df -k /sysroot | awk 'NR == 2 { print $4 }')
    [ $((missing / 1024 + 4096)) -le "$free_kib" ] || \
      fail "disk $device is full: $((free_kib / 1024)) MiB free, the missing paths need $((missing / 1048576 + 4)) MiB"
    mkdir -p /sysroot/nix/.nixie /sysroot/nix/var/nix/profiles
    store_fetch /tmp/closure
    sync
    t1=$(uptime_cs)
    ln -sfn "$system" /sysroot/nix/var/nix/profiles/system
    echo "fetched $got of $count store paths ($got_bytes bytes) in $(secs $t0 $t1) s, $kept kept on the disk, $damaged damaged fetched again; $checked" \
      > /sysroot/nix/.nixie/cached-last
    echo "NIXIE-CACHED-FETCHED $got $count $got_bytes $kept $damaged $verify"
    [ -x "/sysroot$init" ] || fail "$init is not on the disk after the fetch"
    mkdir -p /sysroot/dev /sysroot/proc /sysroot/sys /sysroot/tmp /sysroot/run /sysroot/bin
    for d in dev proc sys; do mount --move /$d /sysroot/$d; done
    echo "NIXIE-STAGE1-CACHED $device"
    exec switch_root /sysroot "$init"
  '';

  # Stage 1: a newc cpio with /init, its own busybox and the modules that reach
  # a virtio disk. Netboot: the closure arrives as the appended per-store-path
  # archives, so /init execs straight into /nix/store. Local boot (`root=` on
  # the command line, written by the installer's boot loader entry): mount the
  # disk's root filesystem, which holds /nix/store, and switch to it.
  stage1 = run "initrd-stage1" ''
    mkdir -p root/proc root/sys root/dev root/bin root/tmp root/run root/sysroot root/lib/modules
    cp ${bb} root/bin/busybox
    for m in ${builtins.concatStringsSep " " (diskModules ++ cachedModules)}; do
      cp ${kernel}/modules/$m.ko root/lib/modules/
    done
    cp ${diskLayout} root/lib/nixie-disk-layout.sh
    cat > root/lib/nixie-cached-store.sh <<'STORE'
${cachedStore}
STORE
    { echo '#!/bin/busybox sh'; cat <<'S'
${udhcpcBody}
S
    } > root/bin/udhcpc-script
    chmod 0755 root/bin/udhcpc-script
    cat > root/cached <<'CACHED'
${cachedStage1}
CACHED
    cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s /bin
export PATH=/bin
echo "NIXIE-STAGE1"
init=; root=; mode=; api=; token=
for w in $(cat /proc/cmdline); do
  case "$w" in
    init=*) init="''${w#init=}" ;;
    root=*) root="''${w#root=}" ;;
    nixie.mode=*) mode="''${w#nixie.mode=}" ;;
    nixie.api=*) api="''${w#nixie.api=}" ;;
    nixie.token=*) token="''${w#nixie.token=}" ;;
  esac
done
[ "$mode" = cached ] && . /cached
if [ -n "$root" ]; then
  for m in ${builtins.concatStringsSep " " diskModules}; do insmod /lib/modules/$m.ko 2>/dev/null; done
  i=0
  while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  if ! mount -t ext4 "$root" /sysroot; then
    echo "stage 1: cannot mount the root filesystem $root"
    exec sh
  fi
  echo "NIXIE-STAGE1-LOCAL $root"
  for d in dev proc sys; do mkdir -p /sysroot/$d; mount --move /$d /sysroot/$d; done
  if [ -z "$init" ] || [ ! -x "/sysroot$init" ]; then
    echo "stage 1: no usable init= on the kernel command line ($init)"
    exec sh
  fi
  exec switch_root /sysroot "$init"
fi
if [ -z "$init" ] || [ ! -x "$init" ]; then
  echo "stage 1: no usable init= on the kernel command line ($init)"
  exec sh
fi
exec "$init"
INIT
    chmod 0755 root/init
    cd root
    find . | sort | cpio -o -H newc > "$out"
  '';

  # The boot loaders (lab/flake.py puts them in ./bootloaders): SYSLINUX's MBR and
  # extlinux with the glibc it needs, GRUB as one EFI binary.
  bootloaders = builtins.path { path = ./bootloaders; name = "nixie-lab-bootloaders"; };

  # The installer (stage 2 runs it when the router boots the host with
  # nixie.mode=install): the disk layout the system declares (nixie-disk in the
  # toplevel), busybox fdisk/mkdosfs/mke2fs, the netbooted closure copied from
  # RAM into the disk's /nix/store with its registration, extlinux + GRUB, each
  # step reported to the router, then a reboot.
  installer = run "nixie-lab-installer" ''
    cat > "$out" <<'S'
#!${bb} sh
# usage: installer SYSTEM API TOKEN
system=$1; api=$2; token=$3
export PATH=/bin
loaders=${bootloaders}
. ${diskLayout}
step() { echo "NIXIE-INSTALL $1"; post installing "$1" || echo "NIXIE-REPORT-FAILED"; }
fail() {
  echo "NIXIE-INSTALL-FAILED $1"
  umount /esp 2>/dev/null; umount /mnt 2>/dev/null
  post failed "install failed: $1" || echo "NIXIE-REPORT-FAILED"
  while true; do sleep 3600; done
}
uptime_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 100 }'; }

compare=; want=
for w in $(cat /proc/cmdline); do
  case "$w" in
    nixie.system=*) want="''${w#nixie.system=}" ;;
    nixie.install.compare=1) compare=1 ;;
  esac
done
if [ -n "$want" ] && [ "$want" != "$system" ]; then
  [ -x "$want/init" ] || fail "system $want is not in this boot's store"
  system=$want
fi
[ -r "$system/nixie-disk" ] || fail "$system declares no disk layout (nixie-disk)"
device=; esp_mib=
. "$system/nixie-disk"
[ -n "$device" ] && [ -n "$esp_mib" ] || fail "the disk layout of $system names no device or ESP size"
[ "$esp_mib" -ge 34 ] || fail "an ESP of $esp_mib MiB is too small for FAT32 (34 MiB at least)"
for m in ${builtins.concatStringsSep " " installModules}; do
  insmod ${kernel}/modules/$m.ko 2>/dev/null
done
disk_wait "$device"
store_mib=$(du -sm /nix/store | cut -f1)
paths=$(ls /nix/store | wc -l)
need_mib=$(( esp_mib + 1 + store_mib + store_mib / 4 + 16 ))
disk_layout "$device" "$esp_mib" "$need_mib"
mkdir -p /mnt /esp
mount -t ext4 "$part"2 /mnt || fail "cannot mount the new root filesystem ''${part}2"

ref_copy() {  # the reference: plain cp -a of the same closure onto the same disk; seconds
  r0=$(uptime_cs); mkdir -p /mnt/tmp/ref
  cp -a /nix/store/. /mnt/tmp/ref/ && sync
  r1=$(uptime_cs); rm -rf /mnt/tmp/ref; sync
  secs $r0 $r1
}
# compared: the reference runs before and after the install's copy, so neither pays alone
# for the new filesystem's first writes or has the other's page cache
[ -n "$compare" ] && ref_before=$(ref_copy)
step "copy: $paths store paths, $store_mib MiB, into /nix/store on ''${part}2"
t0=$(uptime_cs)
mkdir -p /mnt/nix/store /mnt/nix/.nixie /mnt/nix/var/nix/profiles
cp -a /nix/store/. /mnt/nix/store/ 2>/tmp/cp.log || fail "copy into /nix/store: $(tail -n 1 /tmp/cp.log)"
sync
t1=$(uptime_cs)
reg=/nix/.nix-netboot-serve-db/registration
[ -r "$reg" ] || reg=/nix/.nixie/registration
[ -r "$reg" ] || fail "this boot holds no registration of its closure"
cp "$reg" /mnt/nix/.nixie/registration
ln -sfn "$system" /mnt/nix/var/nix/profiles/system-1-link
ln -sfn system-1-link /mnt/nix/var/nix/profiles/system
mkdir -p /mnt/dev /mnt/proc /mnt/sys /mnt/tmp /mnt/run /mnt/bin
copied="copied $paths paths ($store_mib MiB) in $(secs $t0 $t1) s"
if [ -n "$compare" ]; then
  copied="$copied; reference cp -a $ref_before s before, $(ref_copy) s after"
fi
echo "NIXIE-INSTALL $copied"

step "boot loader: extlinux (BIOS) and GRUB (UEFI); $copied"
mkdir -p /mnt/boot/nixie /mnt/boot/extlinux
cp -L "$system/kernel" /mnt/boot/nixie/kernel || fail "copying the kernel"
cp -L "$system/initrd" /mnt/boot/nixie/initrd || fail "copying the initrd"
params="init=$system/init root=''${part}2 $(cat "$system/kernel-params") nixie.boot=local nixie.api=$api"
cat > /mnt/boot/extlinux/extlinux.conf <<CFG
SERIAL 0 115200
DEFAULT nixie
PROMPT 0
TIMEOUT 1
LABEL nixie
  LINUX /boot/nixie/kernel
  INITRD /boot/nixie/initrd
  APPEND $params
CFG
cat > /mnt/boot/nixie/grub.cfg <<CFG
set timeout=0
menuentry "nixie $(basename "$system")" {
  linux /boot/nixie/kernel $params
  initrd /boot/nixie/initrd
}
CFG
$loaders/ld-linux-x86-64.so.2 --library-path $loaders $loaders/extlinux \
  --install /mnt/boot/extlinux >/tmp/extlinux.log 2>&1 || fail "extlinux: $(tail -n 1 /tmp/extlinux.log)"
dd if=$loaders/mbr.bin of="$device" bs=440 count=1 conv=notrunc 2>/dev/null || fail "writing the MBR"
mount -t vfat "$part"1 /esp || fail "cannot mount the ESP ''${part}1"
mkdir -p /esp/EFI/BOOT
cp $loaders/BOOTX64.EFI /esp/EFI/BOOT/BOOTX64.EFI || fail "copying GRUB to the ESP"
umount /esp
sync

n=0
until post installed "installed $system on $device"; do
  n=$((n+1))
  [ $n -lt 5 ] || { umount /mnt; echo "NIXIE-REPORT-FAILED"; while true; do sleep 3600; done; }
  sleep 2
done
ltok=$(sed -n 's/.*"local_token": *"\([^"]*\)".*/\1/p' /tmp/answer)
if [ -n "$ltok" ]; then
  (umask 077; echo "$ltok" > /mnt/nix/.nixie/agent-token)
else
  echo "NIXIE-NO-LOCAL-TOKEN"
fi
sync
umount /mnt
echo "NIXIE-INSTALLED $system"
reboot -f
S
    chmod 0755 "$out"
  '';

  udhcpcScript = run "udhcpc-script" ''
    cat > "$out" <<'S'
#!${bb} sh
${udhcpcBody}
S
    chmod 0755 "$out"
  '';

  # disk: the layout an install applies (MBR: an ESP of espMiB, then the root
  # filesystem on the rest); the installer reads it from the toplevel's nixie-disk.
  # busybox mkdosfs always writes FAT32, which UEFI firmware reads only with at least
  # 65525 clusters: 34 MiB and up.
  nixosSystem = { hostName, macs ? [ ], kernelParams ? [ "console=ttyS0" "panic=-1" ],
                  disk ? { device = "/dev/vda"; espMiB = 64; } }:
    let
      # The knob tests turn: it is baked into the toplevel only, so changing
      # release.txt changes exactly one store path (the toplevel).
      release = builtins.readFile ./release.txt;
      toplevel = run "nixos-system-${hostName}" ''
        mkdir -p "$out"
        ln -s ${kernel}/bzImage "$out/kernel"
        ln -s ${stage1} "$out/initrd"
        printf '%s' "${builtins.concatStringsSep " " kernelParams}" > "$out/kernel-params"
        printf '%s\n' "${hostName}" > "$out/hostname"
        printf 'device=%s\nesp_mib=%s\n' "${disk.device}" "${toString disk.espMiB}" \
          > "$out/nixie-disk"
        cat > "$out/nixie-release" <<'REL'
    ${release}
    REL
        cat > "$out/init" <<'INIT'
    #!${bb} sh
    bb=${bb}
    $bb mkdir -p /bin /tmp /run
    $bb --install -s /bin 2>/dev/null
    export PATH=/bin
    hostname ${hostName}
    echo "NIXIE-STAGE2 ${hostName}"
    for m in ${builtins.concatStringsSep " " virtioModules}; do
      insmod ${kernel}/modules/$m.ko 2>/dev/null || true
    done
    ip link set lo up
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    ip link set eth0 up
    api=; token=; mode=; boot=
    for w in $(cat /proc/cmdline); do
      case "$w" in
        nixie.api=*) api="''${w#nixie.api=}" ;;
        nixie.token=*) token="''${w#nixie.token=}" ;;
        nixie.mode=*) mode="''${w#nixie.mode=}" ;;
        nixie.boot=*) boot="''${w#nixie.boot=}" ;;
      esac
    done
    case "$api" in
      *://\[*)  # booted over IPv6: the address the router advertises (SLAAC), no DHCPv4
        ${slaacWait}
        echo "NIXIE-IPV6 $(ip -6 addr show dev eth0 | grep 'scope global')" ;;
      *) udhcpc -i eth0 -n -q -t 20 -T 1 -s ${udhcpcScript} || echo "NIXIE-DHCP-FAILED" ;;
    esac
    self=$(dirname "$0")
    if [ "$mode" = install ]; then
      echo "NIXIE-INSTALLER ${hostName}"
      exec ${installer} "$self" "$api" "$token"
    fi
    msg="${hostName} reached stage 2 of $self"
    if [ "$mode" = cached ]; then
      msg="${hostName} booted $self from its disk's /nix/store (mode cached): $(cat /nix/.nixie/cached-last 2>/dev/null)"
      echo "NIXIE-CACHED-BOOT ${hostName} $self"
    fi
    if [ "$boot" = local ]; then
      token=$(cat /nix/.nixie/agent-token 2>/dev/null)
      msg="${hostName} booted $self from its disk (mode local)"
      echo "NIXIE-LOCAL-BOOT ${hostName}"
    fi
    if [ -n "$api" ]; then
      if wget -q -O /tmp/report --header "Authorization: Bearer $token" \
          --header "Content-Type: application/json" \
          --post-data "{\"event\":\"booted\",\"message\":\"$msg\"}" \
          "$api/api/v1/agent/events"; then
        echo "NIXIE-REPORTED"
      else
        echo "NIXIE-REPORT-FAILED"
      fi
    fi
    while true; do sleep 3600; done
    INIT
        chmod 0755 "$out/init"
      '';
    in
    {
      config = {
        system.build.toplevel = toplevel;
        networking.hostName = hostName;
        nixie.netboot.macs = macs;
        nixie.install.disk = disk;
        boot.kernelParams = kernelParams;
      };
    };
in
{
  inherit nixosSystem;
  # the cached netboot's store library, as text (tests/unit/test_cached_content_check.py)
  inherit cachedStore;
}
