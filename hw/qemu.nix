# QEMU/KVM guest (x86_64 with OVMF, aarch64 with AAVMF): virtio disk and NICs.
# Start it with the WAN first and the LAN second, e.g.
#   -nic user,model=virtio-net-pci -nic tap,ifname=tap-lan,model=virtio-net-pci
# eth0 is the WAN (QEMU's user network gives it DHCP), eth1 the LAN.
{ lib, modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];

  networking.usePredictableInterfaceNames = false;

  services.nixie.settings = {
    wan.interface = lib.mkDefault "eth0";
    lan.interface = lib.mkDefault "eth1";
  };

  boot.kernelParams = [ "console=tty0" "console=ttyS0,115200n8" ];
}
