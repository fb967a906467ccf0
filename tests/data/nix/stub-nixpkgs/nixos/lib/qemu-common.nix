# Stand-in for nixpkgs' nixos/lib/qemu-common.nix (only what vm-test.nix uses).
{ lib, stdenv }:
{
  qemuBinary = qemu: "${qemu}/bin/qemu-kvm";
}
