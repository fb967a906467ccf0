# PC Engines APU2 (apu2c4/apu2e4 and kin): AMD GX-412TC, three Intel i210/i211
# ports (igb), mSATA or SD storage, coreboot with SeaBIOS (BIOS boot only),
# no video: the console is the serial port, 115200 8N1.
#
# Ports, counted from the serial connector: enp1s0 (WAN), enp2s0 (LAN),
# enp3s0 (spare, not configured).
{ lib, ... }:
{
  services.nixie.settings = {
    wan.interface = lib.mkDefault "enp1s0";
    lan.interface = lib.mkDefault "enp2s0";
  };

  boot.kernelParams = [ "console=ttyS0,115200n8" ];
  boot.initrd.availableKernelModules = [ "ahci" "ehci_pci" "xhci_pci" "usb_storage" "sd_mod" "sdhci_pci" ];
  boot.initrd.kernelModules = [ "igb" ];
  boot.kernelModules = [ "kvm-amd" ];
  hardware.cpu.amd.updateMicrocode = lib.mkDefault true;

  # BIOS boot with GRUB on the serial console; the mSATA disk is /dev/sda
  boot.loader.grub = {
    enable = true;
    device = lib.mkDefault "/dev/sda";
    extraConfig = ''
      serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
      terminal_input serial
      terminal_output serial
    '';
  };
}
