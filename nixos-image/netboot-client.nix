# nixosModules.netboot-client: a host that runs diskless from the router.
#
# The router boots the host with the system's own stage-1 initrd followed by
# its whole closure as CPIO archives, so stage 1 starts with every path of
# the system under /nix/store in the initramfs, plus the Nix database
# registration of that closure at /nix/.nixie/registration. This module:
#
# * makes the root file system a tmpfs;
# * at the end of stage 1 (after the root is mounted, before switch_root),
#   copies the initramfs's /nix/store and the registration under the new
#   root. switch_root empties the initramfs, so a bind mount would lose the
#   files; a copy survives it, and the initramfs copy is freed by switch_root
#   (RAM for twice the closure is needed for that moment). Works with the
#   scripted stage 1 (postMountCommands) and with systemd in stage 1 (a unit
#   ordered before initrd-fs.target);
# * loads the registration into the Nix database early in stage 2, so `nix`
#   on the host knows its own store, and points the system profile at it;
# * runs nixie-agent, which reports `booted` to the router (`nixie.api`,
#   `nixie.token` on the kernel command line) with the SSH host key, except on an
#   install boot (`nixie.mode=install`: nixosModules.installer reports);
# * links the system's disko script (when the configuration uses disko) into its
#   toplevel as `nixie-disko`: the layout the installer and the push install apply.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf mkDefault mkOverride types;
  cfg = config.nixie.netboot;
  agent = pkgs.callPackage ./agent/package.nix { };
  nixbldGid = toString config.ids.gids.nixbld;
  # where the registration may be: ours, and nix-netboot-serve's layout
  registrations = lib.unique [ cfg.registration "/nix/.nix-netboot-serve-db/registration" ];

  # copy the initramfs store (and the registration) under the new root
  keepStore = root: ''
    if [ -d /nix/store ]; then
      mkdir -p ${root}/nix/store ${root}/nix/.nixie
      # one cp for the whole store (a process per path costs 3x, bench/stage1)
      cp -a /nix/store/. ${root}/nix/store/
      # after the copy, which gives the directory the initramfs's owner and mode
      chown 0:${nixbldGid} ${root}/nix/store
      chmod 1775 ${root}/nix/store
      for r in ${lib.concatStringsSep " " registrations}; do
        if [ -f "$r" ]; then
          mkdir -p "${root}$(dirname "$r")"
          cp "$r" "${root}$r"
        fi
      done
    fi
  '';
in
{
  options.nixie.netboot = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = "Run this system diskless from the Nixie router (tmpfs root, store from the initramfs).";
    };
    registration = mkOption {
      type = types.str;
      default = "/nix/.nixie/registration";
      description = ''
        Where the router puts the closure's Nix database registration in the
        initramfs (the format of `nix-store --dump-db`, as `closureInfo`'s
        `registration` file). nix-netboot-serve's place,
        /nix/.nix-netboot-serve-db/registration, is also looked at.
      '';
    };
    rootSize = mkOption {
      type = types.str;
      default = "75%";
      description = "Size limit of the tmpfs root, which also holds the Nix store (tmpfs `size=`).";
    };
    agent = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Report `booted` to the router once the network is up.";
      };
      package = mkOption {
        type = types.package;
        default = agent;
        defaultText = lib.literalExpression "pkgs.callPackage ./agent/package.nix { }";
        description = "The nixie-agent package.";
      };
    };
  };

  config = mkIf cfg.enable {
    # stronger than a plain definition (a placeholder disk some configs carry),
    # weaker than mkForce
    fileSystems."/" = mkOverride 60 {
      device = "none";
      fsType = "tmpfs";
      options = [ "mode=0755" "size=${cfg.rootSize}" ];
    };
    boot.loader.grub.enable = mkDefault false;

    boot.initrd.postMountCommands = mkIf (!config.boot.initrd.systemd.enable) (keepStore "$targetRoot");

    # cp -a, chown, chmod for the unit below (on PATH in systemd's stage 1)
    boot.initrd.systemd.initrdBin = mkIf config.boot.initrd.systemd.enable [ pkgs.coreutils ];
    boot.initrd.systemd.services.nixie-keep-store = mkIf config.boot.initrd.systemd.enable {
      description = "Keep the netbooted Nix store under the new root";
      wantedBy = [ "initrd-fs.target" ];
      requires = [ "sysroot.mount" ];
      after = [ "sysroot.mount" ];
      before = [ "initrd-fs.target" "initrd-nixos-activation.service" ];
      unitConfig.DefaultDependencies = false;
      serviceConfig.Type = "oneshot";
      script = keepStore "/sysroot";
    };

    boot.postBootCommands = ''
      for r in ${lib.concatStringsSep " " registrations}; do
        if [ -f "$r" ] && [ ! -e /nix/var/nix/db/db.sqlite ]; then
          ${config.nix.package.out}/bin/nix-store --load-db < "$r"
          touch /etc/NIXOS
          ${config.nix.package.out}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
        fi
      done
    '';

    networking.useDHCP = mkDefault true;

    # the system carries its disk layout: the flake's disko configuration as the script
    # that applies it, at <toplevel>/nixie-disko, for the installer (nixie.mode=install)
    # and the router's push install (nixos-anywhere --store-paths)
    system.extraSystemBuilderCmds = lib.optionalString (config.system.build ? diskoScript) ''
      ln -s ${config.system.build.diskoScript} $out/nixie-disko
    '';

    systemd.services.nixie-agent = mkIf cfg.agent.enable {
      description = "Report this machine's boot to the Nixie router";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      # after sshd made the host keys: the report carries the public one, which the
      # router pins for its push install
      after = [ "network-online.target" ] ++ lib.optional (config.services.openssh.enable or false) "sshd.service";
      # an install boot reports through the installer (installing, installed), not booted
      unitConfig.ConditionKernelCommandLine = [ "nixie.api" "!nixie.mode=install" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        DynamicUser = true;
        PrivateTmp = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        NoNewPrivileges = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        SystemCallFilter = [ "@system-service" ];
        CapabilityBoundingSet = "";
      };
      script = ''
        exec ${lib.getExe cfg.agent.package} booted "$(readlink /run/current-system)"
      '';
    };
  };
}
