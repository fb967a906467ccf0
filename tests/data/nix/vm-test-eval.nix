# Evaluates nixos-image/vm-test.nix with stand-ins (the test driver's
# runNixOSTest returns its arguments) and returns what a test here can check:
# the rendered test script, the router node's configuration, and the flake
# the router builds the client from.
{ root }:
let
  lib = import ./stub-lib.nix;
  stubPkgs = import ./stub-pkgs.nix "x86_64-linux";
  pkgs = stubPkgs // {
    inherit lib;
    testers.runNixOSTest = args: args;
  };
  nixpkgs = {
    outPath = toString ./stub-nixpkgs;
    lib.nixosSystem = args: {
      config.system.build.toplevel = "/nix/store/stub-nixos-system-client";
      modules = map toString (builtins.filter builtins.isPath args.modules);
    };
  };
  self = {
    outPath = toString root;
    nixosModules.netboot-client = root + "/nixos-image/netboot-client.nix";
    nixosModules.router = root + "/nixos-image/router.nix";
  };
  test = import (root + "/nixos-image/vm-test.nix") { inherit pkgs self nixpkgs; };
  router = test.nodes.router {
    config.networking.primaryIPAddress = "192.168.1.1";
    inherit lib;
    pkgs = stubPkgs;
  };
  flakeScript = (builtins.elemAt router.virtualisation.additionalPaths 1).script;
in
{
  inherit (test) name;
  testScript = test.testScript { nodes.router.networking.primaryIPAddress = "192.168.1.1"; };
  routerImports = map toString router.imports;
  routerSettings = router.services.nixie.settings;
  routerNixie = builtins.removeAttrs router.services.nixie [ "settings" ];
  vlans = router.virtualisation.vlans;
  additionalPaths = map toString router.virtualisation.additionalPaths;
  inherit flakeScript;
}
