# The router's raw disk image: `system.build.nixieImage` (nixos.img), made by
# nixpkgs' make-disk-image from this very configuration. Write it to the
# router's disk with dd; the root file system grows to the disk on first boot.
#
#   efi:    GPT, ESP (label ESP) on /boot, ext4 root (label nixos), systemd-boot
#           (also installed at the removable path, so no NVRAM entry is needed)
#   legacy: MBR, ext4 root (label nixos), GRUB in the MBR of boot.loader.grub.device
{ config, lib, pkgs, modulesPath, ... }:
let
  inherit (lib) mkOption mkIf mkDefault types;
  cfg = config.nixie.image;
  efi = cfg.partitionTable == "efi";
in
{
  options.nixie.image = {
    partitionTable = mkOption {
      type = types.enum [ "efi" "legacy" ];
      default = "efi";
      description = "UEFI boot (GPT with an ESP) or BIOS boot (MBR).";
    };
    additionalSpace = mkOption {
      type = types.str;
      default = "2048M";
      description = "Free space in the image beyond the closure (the root grows to the disk anyway).";
    };
  };

  config = {
    fileSystems."/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "ext4";
      autoResize = true;
    };
    fileSystems."/boot" = mkIf efi {
      device = "/dev/disk/by-label/ESP";
      fsType = "vfat";
      options = [ "fmask=0077" "dmask=0077" ];
    };
    boot.growPartition = true;

    boot.loader.systemd-boot.enable = mkIf efi true;
    boot.loader.efi.canTouchEfiVariables = mkDefault false;
    boot.loader.grub.enable = mkDefault (!efi);
    boot.loader.grub.device = mkIf (!efi) (mkDefault "/dev/sda");

    system.stateVersion = mkDefault "25.05";

    system.build.nixieImage = import (modulesPath + "/../lib/make-disk-image.nix") {
      inherit lib config pkgs;
      name = "nixie-${config.networking.hostName}";
      format = "raw";
      partitionTableType = cfg.partitionTable;
      diskSize = "auto";
      inherit (cfg) additionalSpace;
      copyChannel = false;
      touchEFIVars = false;
    };
  };
}
