# A stand-in for the parts of nixpkgs the modules touch, for evaluating their
# `config` halves without nixpkgs: every package is a labelled placeholder
# whose outPath is /nix/store/stub-<name>; builders keep their inputs (the
# text of writeText, the script of runCommand) so tests can read them.
let
  pkg = name: {
    inherit name;
    type = "derivation";
    outPath = "/nix/store/stub-${name}";
    out = pkg' name;
    override = _: pkg "${name}-overridden";
    meta.mainProgram = name;
  };
  pkg' = name: { outPath = "/nix/store/stub-${name}"; };
  names = [
    "git" "openssh" "iproute2" "nftables" "jq" "makeWrapper" "coreutils" "gnused" "gawk" "curl"
    "systemd" "parted" "dosfstools" "e2fsprogs" "nix" "nixStatic" "ipxe" "busybox" "qemu_test"
    "wireguard-tools" "ipmitool" "syslinux" "grub2_efi" "xorriso" "mtools"
  ];
  base = builtins.listToAttrs (map (n: { name = n; value = pkg n; }) names);
  stdenvFor = system: {
    hostPlatform = { isx86_64 = system == "x86_64-linux"; isAarch64 = system == "aarch64-linux"; inherit system; };
  };
  pkgsFor = system: base // {
    stdenv = stdenvFor system;
    runtimeShell = "/nix/store/stub-bash/bin/bash";
    writeText = name: text: pkg name // { inherit text; };
    runCommand = name: env: script: pkg name // { inherit env script; };
    callPackage = path: args: pkg (baseNameOf (dirOf path)) // {
      path = toString path;
      meta.mainProgram = if baseNameOf (dirOf path) == "agent" then "nixie-agent" else "nixie";
    };
    pkgsCross = {
      gnu64 = pkgsFor "x86_64-linux" // { stub = "cross-x86_64"; };
      aarch64-multiplatform = pkgsFor "aarch64-linux" // { stub = "cross-aarch64"; };
    };
  };
in
pkgsFor
