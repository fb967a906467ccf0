# Evaluates flake.nix's `outputs` with a stand-in nixpkgs (stub-lib.nix as
# lib; packages and NixOS systems as labelled placeholders) and returns the
# shape of the outputs: names per system, what each NixOS configuration is
# made of, the modules' files. Nothing here builds or needs nixpkgs.
{ root }:
let
  lib = import ./stub-lib.nix // {
    getExe = p: "${p}/bin/${p.meta.mainProgram}";
    nixosSystem = args: {
      stub = "nixosSystem";
      inherit (args) system;
      modules = map (m: if builtins.isPath m then toString m else if builtins.isAttrs m then "inline" else "other") args.modules;
      inline = builtins.filter builtins.isAttrs args.modules;
      config.system.build = { toplevel = "toplevel"; nixieImage = "nixieImage"; };
      config.services.nixie.configFile = "/nix/store/stub-config-"
      + (builtins.head (builtins.filter builtins.isAttrs args.modules)).networking.hostName;
    };
  };
  pyPkgs = builtins.listToAttrs (map (n: { name = n; value = { pname = n; }; }) [
    "flask" "flask-wtf" "pyroute2" "dnslib" "tftpy" "waitress" "sqlite-utils" "zstandard"
    "argon2-cffi" "qrcode" "cryptography" "prometheus-client" "wtforms" "pytest" "pytest-timeout" "hypothesis" "requests"
  ]);
  pkgsFor = system: import ./stub-pkgs.nix system // {
    stub = "pkgs-${system}";
    callPackage = path: _: { stub = "callPackage"; path = toString path; outPath = "/nix/store/stub-${baseNameOf (dirOf path)}"; meta.mainProgram = "nixie"; };
    mkShell = args: { stub = "mkShell"; packages = map toString args.packages; rawPackages = args.packages; inherit (args) shellHook; };
    python3.withPackages = f: { outPath = "/nix/store/stub-python3-env"; pythonPackages = map (p: p.pname) (f pyPkgs); };
    ruff = { outPath = "/nix/store/stub-ruff"; };
    qemu = { outPath = "/nix/store/stub-qemu"; };
    dnsmasq = { outPath = "/nix/store/stub-dnsmasq"; };
    OVMF.fd = { outPath = "/nix/store/stub-OVMF-fd"; };
  };
  nixpkgs = {
    inherit lib;
    outPath = "/nixpkgs-stub";
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor;
  };
  flake = import (root + "/flake.nix");
  self = flake.outputs { inherit self nixpkgs; } // { outPath = root; };
  names = set: builtins.attrNames set;
  perSystem = out: builtins.mapAttrs (_: names) out;
in
{
  description = flake.description;
  inputs = builtins.mapAttrs (_: i: i.url) flake.inputs;
  outputs = names self;
  packages = perSystem self.packages;
  checks = perSystem self.checks;
  devShells = perSystem self.devShells;
  nixosModules = builtins.mapAttrs (_: toString) self.nixosModules;
  nixosConfigurations = builtins.mapAttrs (_: c: {
    inherit (c) system modules;
    settings = map (m: m.services.nixie or { }) c.inline;
    partitionTables = map (m: m.nixie.image.partitionTable or null) c.inline;
  }) self.nixosConfigurations;
  nixiePackage = self.packages.x86_64-linux.nixie.path;
  agentPackage = self.packages.aarch64-linux.nixie-agent.path;
  configJsonCheck = self.checks.x86_64-linux.config-json.script;
  devShell = let d = self.devShells.x86_64-linux.default; in {
    inherit (d) packages shellHook;
    python = (builtins.head (builtins.filter (p: p ? pythonPackages) d.rawPackages)).pythonPackages;
  };
  images = builtins.mapAttrs (_: v: v) (lib.filterAttrs (n: _: builtins.substring 0 6 n == "image-") self.packages.x86_64-linux);
}
