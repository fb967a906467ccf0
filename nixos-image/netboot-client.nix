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
#   toplevel as `nixie-disko`: the layout the installer and the push install apply;
# * with nixie.netboot.cached.enable, cached netboot (`nixie.mode=cached`, scripted
#   stage 1): the network up in the initrd, then nixos-image/cached/nixie-cached mounts
#   the disk's store filesystem (label nixie-store, made on cached.device when missing)
#   at /nix under the tmpfs root and substitutes only the paths of init='s system it
#   lacks from <nixie.api>/nix-cache, trusting exactly nixie.cache_key=, with a static
#   nix in the initrd; stage 2 then runs from the disk's store.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf mkDefault mkOverride types;
  cfg = config.nixie.netboot;
  agent = pkgs.callPackage ./agent/package.nix { };
  nixbldGid = toString config.ids.gids.nixbld;
  # where the registration may be: ours, and nix-netboot-serve's layout
  registrations = lib.unique [ cfg.registration "/nix/.nix-netboot-serve-db/registration" ];

  # cached netboot's stage 1: the one script, in the initrd at /nixie-cached
  cachedScript = ./cached/nixie-cached;
  cachedStage1 = ''
    if grep -qw nixie.mode=cached /proc/cmdline; then
      NIXIE_CACHED_DEVICE=${lib.escapeShellArg cfg.cached.device} sh /nixie-cached boot "$targetRoot" \
        || fail "cached netboot: the system could not be fetched from the router"
    fi
  '';

  # copy the initramfs store (and the registration) under the new root
  # (not on a cached boot: the disk's store is at /nix there)
  keepStore = root: ''
    if [ -d /nix/store ] && ! grep -qw nixie.mode=cached /proc/cmdline; then
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
    cached = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Support cached netboot (`nixie.mode=cached` on the kernel command line, the
          router's mode `cached`): stage 1 keeps /nix on the disk and fetches only the
          store paths it lacks from the router's binary cache. Scripted stage 1 only.
          Brings the network up in the initrd on every boot.
        '';
      };
      device = mkOption {
        type = types.str;
        default = "/dev/vda";
        description = ''
          The disk the store filesystem (ext4, label `nixie-store`, mounted at /nix) is made
          on when no filesystem has that label. The whole disk: its contents are lost.
        '';
      };
      nix = mkOption {
        type = types.package;
        default = pkgs.nixStatic;
        defaultText = lib.literalExpression "pkgs.nixStatic";
        description = "The nix put in the initrd (`nix copy` from the router's cache): static, one file.";
      };
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

    boot.initrd.postMountCommands = mkIf (!config.boot.initrd.systemd.enable)
      ((lib.optionalString cfg.cached.enable cachedStage1) + keepStore "$targetRoot");

    assertions = [{
      assertion = !(cfg.cached.enable && config.boot.initrd.systemd.enable);
      message = "nixie.netboot.cached needs the scripted stage 1 (boot.initrd.systemd.enable = false)";
    }];
    boot.initrd.network.enable = mkIf cfg.cached.enable true;
    boot.initrd.extraFiles = mkIf cfg.cached.enable { "/nixie-cached".source = cachedScript; };
    boot.initrd.extraUtilsCommands = mkIf cfg.cached.enable ''
      copy_bin_and_libs ${cfg.cached.nix}/bin/nix
      copy_bin_and_libs ${pkgs.e2fsprogs}/bin/mkfs.ext4
    '';

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
