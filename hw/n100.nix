# Fanless Intel N100 (Alder Lake-N) mini PCs sold as routers/firewalls, with
# four Intel i226-V 2.5 GbE ports (igc), NVMe storage, UEFI firmware.
#
# Ports, left to right on the rear panel: enp1s0 (WAN), enp2s0 (LAN),
# enp3s0 and enp4s0 (spare, not configured).
{ lib, ... }:
{
  services.nixie.settings = {
    wan.interface = lib.mkDefault "enp1s0";
    lan.interface = lib.mkDefault "enp2s0";
  };

  boot.initrd.availableKernelModules = [ "nvme" "ahci" "xhci_pci" "usbhid" "usb_storage" "sd_mod" "sdhci_pci" ];
  boot.initrd.kernelModules = [ "igc" ];
  boot.kernelModules = [ "kvm-intel" ];
  # the console is on HDMI; many of these boxes also wire a COM port
  boot.kernelParams = [ "console=tty0" "console=ttyS0,115200n8" ];
  hardware.enableRedistributableFirmware = lib.mkDefault true;
  hardware.cpu.intel.updateMicrocode = lib.mkDefault true;
}
