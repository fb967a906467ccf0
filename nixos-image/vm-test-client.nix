# The machine the VM test netboots: a small NixOS with the netboot-client
# module. The test builds it outside the router VM and the router evaluates
# the same configuration from a flake inside the VM; both must give the same
# store path (so the router finds it built), hence the fixed version strings.
{ lib, ... }:
{
  networking.hostName = "client";
  system.stateVersion = "25.05";
  system.nixos.versionSuffix = lib.mkForce "";
  system.nixos.revision = lib.mkForce null;
  boot.kernelParams = [ "console=ttyS0,115200" ];
  documentation.enable = false;
  networking.useDHCP = true;
  networking.firewall.enable = false;
}
