# nixosModules.installer: a netbooted system that installs a host to its disk.
#
# Import it into a host's configuration (with disko and netboot-client): on an
# install boot the router's script puts nixie.mode=install and nixie.system= on
# the kernel command line; `nixie-install` partitions the disk with the system's
# disko script (<system>/nixie-disko, or nixie.disko=), pulls what the netbooted
# store lacks from the router's binary
# cache (<nixie.api>/nix-cache), runs nixos-install, reports `installing` at
# each step and `installed` at the end (or `failed`), and reboots into the
# disk, which the router's next PXE answer hands to the local disk.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkDefault types;
  cfg = config.nixie.installer;
  installer = pkgs.runCommand "nixie-install" { nativeBuildInputs = [ pkgs.makeWrapper ]; } ''
    install -Dm755 ${./installer/nixie-install} $out/bin/nixie-install
    sed -i "1s|.*|#!${pkgs.runtimeShell}|" $out/bin/nixie-install
    wrapProgram $out/bin/nixie-install \
      --prefix PATH : ${lib.makeBinPath [
        config.nixie.netboot.agent.package
        config.nix.package
        config.system.build.nixos-install
        pkgs.coreutils
        pkgs.gnused
        pkgs.systemd
      ]} \
      --set NIXIE_TRUSTED_KEYS ${lib.escapeShellArg (lib.concatStringsSep " " cfg.trustedPublicKeys)}
  '';
in
{
  imports = [ ./netboot-client.nix ];

  options.nixie.installer = {
    trustedPublicKeys = mkOption {
      type = types.listOf types.str;
      default = config.nix.settings.trusted-public-keys;
      defaultText = lib.literalExpression "config.nix.settings.trusted-public-keys";
      description = ''
        Keys the router's binary cache is checked against: cache.nixos.org's
        for substituted paths, and the router's own (its `cache-key.pub`) for
        paths it built. The router may also pass its key as `nixie.cache_key=`.
      '';
    };
  };

  config = {
    # (the agent's `booted` service skips install boots: nixie.mode=install)

    environment.systemPackages = [ installer pkgs.parted pkgs.dosfstools pkgs.e2fsprogs ];

    systemd.services.nixie-install = {
      description = "Install this host's NixOS system from the Nixie router";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # the router's install script: nixie.mode=install nixie.system=<toplevel>
      unitConfig.ConditionKernelCommandLine = [ "nixie.mode=install" "nixie.system" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${installer}/bin/nixie-install";
        StandardOutput = "journal+console";
        StandardError = "journal+console";
      };
    };

    # the disko script and the system arrive from the cache, never built here
    nix.settings = {
      experimental-features = [ "nix-command" "flakes" ];
      max-jobs = mkDefault 0;
    };
    documentation.enable = mkDefault false;
  };
}
