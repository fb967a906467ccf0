"""Nix: the `nix` CLI wrapper (`command`), flake evaluation, the build worker,
netboot images (CPIO archives and their cache), boot artifacts, the binary
cache, and install to disk. Never imports `appliance.router`."""
