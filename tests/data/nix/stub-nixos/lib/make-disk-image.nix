# Stand-in for nixpkgs' nixos/lib/make-disk-image.nix: returns the arguments
# it was called with (minus the config/pkgs/lib it gets), so a test reads how
# nixos-image/image.nix calls it.
args: builtins.removeAttrs args [ "config" "pkgs" "lib" ] // { stub = "make-disk-image"; }
