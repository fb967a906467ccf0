# NixOS-shaped systems without nixpkgs: every derivation's builder is a copy
# of busybox (materialised into ./bbdir by lab/flake.py), the kernel
# is a prebuilt Debian kernel with its virtio modules (./kernel).
{ src }:
let
  system = "x86_64-linux";
  busybox = builtins.path { path = ./bbdir; name = "busybox"; };
  bb = "${busybox}/bin/busybox";
  kernel = builtins.path { path = ./kernel; name = "linux-lab"; };

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

  # Stage 1: a newc cpio with /init. The closure itself arrives as the
  # appended per-store-path archives, so /init can exec straight into
  # /nix/store.
  stage1 = run "initrd-stage1" ''
    mkdir -p root/proc root/sys root/dev root/bin root/tmp root/run
    cat > root/init <<'INIT'
#!${bb} sh
bb=${bb}
$bb mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb --install -s /bin
export PATH=/bin
echo "NIXIE-STAGE1"
init=
for w in $(cat /proc/cmdline); do
  case "$w" in init=*) init="''${w#init=}" ;; esac
done
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

  udhcpcScript = run "udhcpc-script" ''
    cat > "$out" <<'S'
#!${bb} sh
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
S
    chmod 0755 "$out"
  '';

  virtioModules = [ "virtio_ring" "virtio" "virtio_pci_modern_dev" "virtio_pci_legacy_dev"
                    "virtio_pci" "failover" "net_failover" "virtio_net" ];

  nixosSystem = { hostName, macs ? [ ], kernelParams ? [ "console=ttyS0" "panic=-1" ] }:
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
    udhcpc -i eth0 -n -q -t 20 -T 1 -s ${udhcpcScript} || echo "NIXIE-DHCP-FAILED"
    api=; token=
    for w in $(cat /proc/cmdline); do
      case "$w" in
        nixie.api=*) api="''${w#nixie.api=}" ;;
        nixie.token=*) token="''${w#nixie.token=}" ;;
      esac
    done
    self=$(dirname "$0")
    msg="${hostName} reached stage 2 of $self"
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
        boot.kernelParams = kernelParams;
      };
    };
in
{
  inherit nixosSystem;
}
