# Any x86_64 machine with UEFI firmware and one or two Ethernet ports.
# Interface names follow probe order (eth0, eth1) because port names of an
# unknown board cannot be predicted: the first port serves the LAN, the
# second, if present, is the WAN.
{ lib, ... }:
{
  networking.usePredictableInterfaceNames = false;

  services.nixie.settings = {
    lan.interface = lib.mkDefault "eth0";
    wan.interface = lib.mkDefault "eth1";
  };

  boot.initrd.availableKernelModules = [
    "ahci" "nvme" "xhci_pci" "ehci_pci" "usbhid" "usb_storage" "sd_mod" "sdhci_pci"
  ];
  boot.kernelModules = [ "kvm-intel" "kvm-amd" ];
  boot.kernelParams = [ "console=tty0" ];
  hardware.enableRedistributableFirmware = lib.mkDefault true;
  hardware.cpu.intel.updateMicrocode = lib.mkDefault true;
  hardware.cpu.amd.updateMicrocode = lib.mkDefault true;
}
