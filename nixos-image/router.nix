# nixosModules.router: the Nixie appliance on NixOS.
#
# `services.nixie.settings` mirrors the JSON config of `nixie serve` key for
# key (see settings.nix); the module writes it to /etc/nixie/config.json and
# runs `nixie serve` as the static user `nixie` with only the capabilities a
# DHCP/TFTP/DNS server needs. It also turns the machine into a router (LAN
# address, forwarding, the appliance's own nftables ruleset with the NAT to the
# WAN, NixOS's firewall opening the boot services on the LAN only, WireGuard
# when `vpn.enable`), points the TFTP server at iPXE built by nixpkgs,
# and sets up Nix for the build worker: remote builders and the key that signs
# the binary cache the router serves to its LAN.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf mkDefault types literalExpression;

  cfg = config.services.nixie;
  s = cfg.settings;
  settingsLib = import ./settings.nix { inherit lib; };
  nixieLib = import ./lib.nix;

  configJSON = builtins.toJSON (settingsLib.toConfig s);
  configFile = pkgs.writeText "nixie-config.json" configJSON;

  stateDir = s.state_dir;
  defaultStateDir = "/var/lib/nixie";
  lan = nixieLib.splitCidr s.lan.address;
  ports = nixieLib.lanPorts s;
  buildMachine = nixieLib.buildMachineOf s.builder;

  # iPXE for every client the DHCP policy answers: BIOS (undionly.kpxe), UEFI
  # x86_64 (ipxe.efi, snponly.efi) and UEFI arm64 (snponly-arm64.efi), built
  # natively or cross, whichever the router is.
  pkgsX86 = if pkgs.stdenv.hostPlatform.isx86_64 then pkgs else pkgs.pkgsCross.gnu64;
  pkgsArm64 = if pkgs.stdenv.hostPlatform.isAarch64 then pkgs else pkgs.pkgsCross.aarch64-multiplatform;
  ipxeX86 = pkgsX86.ipxe.override { additionalTargets = { "bin-x86_64-efi/snponly.efi" = null; }; };
  ipxeArm64 = pkgsArm64.ipxe.override { additionalTargets = { "bin-arm64-efi/snponly.efi" = "snponly-arm64.efi"; }; };
  defaultIpxe = pkgs.runCommand "nixie-ipxe" { } (''
    mkdir -p $out
    ln -s ${ipxeX86}/undionly.kpxe ${ipxeX86}/ipxe.efi ${ipxeX86}/snponly.efi $out/
  '' + lib.optionalString cfg.ipxe.arm64 ''
    ln -s ${ipxeArm64}/snponly-arm64.efi $out/
  '');

  cacheKeyDir = "/var/lib/nixie-cache-key";

  vpnPorts = nixieLib.vpnPorts s;
  vpnOn = s.vpn.enable;
  # NAT is the appliance's job: its ruleset (table inet nixie, appliance/router/firewall.py)
  # masquerades the LAN and the VPN out of the WAN, following the WAN the web UI
  # sets. NixOS's networking.nat is never turned on here (no second NAT).
  appNat = s.firewall.enable && s.wan.nat && s.wan.interface != null;
  nixosNatOnLan = (config.networking.nat.enable or false)
    && builtins.elem s.lan.interface (config.networking.nat.internalInterfaces or [ ]);
in
{
  options.services.nixie = {
    enable = mkEnableOption "the Nixie router appliance (DHCP, TFTP, DNS, HTTP boot, web UI, builds)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The nixie package.";
    };

    settings = settingsLib.options;

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = configFile;
      defaultText = literalExpression "the settings as JSON in the store";
      description = "The JSON config written from `settings`; /etc/nixie/config.json links to it.";
    };

    ipxe = {
      package = mkOption {
        type = types.package;
        default = defaultIpxe;
        defaultText = literalExpression "undionly.kpxe, ipxe.efi, snponly.efi (and snponly-arm64.efi) from pkgs.ipxe";
        description = "Directory of iPXE binaries the TFTP server serves; `settings.tftp.ipxe_dir` points here.";
      };
      arm64 = mkOption {
        type = types.bool;
        default = true;
        description = "Also build iPXE for arm64 UEFI clients (cross-compiled on an x86_64 router).";
      };
    };

    configureInterfaces = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Give the LAN interface `settings.lan.address`, and the WAN interface its
        static address and gateway or a DHCP client. Turn off when the network
        is configured elsewhere (networkd, NetworkManager, a test framework).
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the DHCP, TFTP, DNS, HTTP boot and web UI ports on the LAN interface (never on the WAN).";
    };

    cacheKey = {
      name = mkOption {
        type = types.str;
        default = "${config.networking.hostName}-nixie-1";
        defaultText = literalExpression ''"''${config.networking.hostName}-nixie-1"'';
        description = "Name of the binary-cache signing key generated on first boot.";
      };
      secretKeyFile = mkOption {
        type = types.str;
        default = "${cacheKeyDir}/cache-key.sec";
        description = ''
          Secret key the Nix daemon signs every path it builds with, so clients
          trust the router's binary cache (`<nixie.api>/nix-cache`). Generated
          on first boot when missing; its public half is next to it as
          `cache-key.pub`.
        '';
      };
    };
  };

  config = mkIf cfg.enable {
    services.nixie.settings = {
      tftp.ipxe_dir = mkDefault "${cfg.ipxe.package}";
      # the binary cache signs with the key the daemon signs its builds with
      nix.cache_key_file = mkDefault cfg.cacheKey.secretKeyFile;
      # the appliance keeps its own table (inet nixie) in step with its network
      # changes and does the NAT; a packet must pass it and NixOS's firewall
      firewall.enable = mkDefault true;
      firewall.ssh_port = mkDefault (builtins.head (config.services.openssh.ports ++ [ 22 ]));
    };

    assertions = [
      {
        assertion = s.wan.interface != s.lan.interface;
        message = "services.nixie: settings.wan.interface must differ from settings.lan.interface";
      }
      {
        assertion = s.builder.kind != "remote" || s.builder.uri != null;
        message = "services.nixie: settings.builder.uri is required when settings.builder.kind is remote";
      }
      {
        assertion = !(s.dns.enable && config.services.dnsmasq.enable);
        message = "services.nixie: the router's DNS server and dnsmasq both want port 53; disable one";
      }
      {
        assertion = s.wan.interface == null || !s.wan.nat || s.firewall.enable;
        message = "services.nixie: settings.wan.nat needs settings.firewall.enable (the appliance's ruleset does the NAT); "
          + "to NAT with networking.nat instead, set settings.wan.nat = false";
      }
      {
        assertion = !(appNat && nixosNatOnLan);
        message = "services.nixie: the appliance's ruleset already masquerades the LAN (settings.wan.nat); "
          + "remove settings.lan.interface from networking.nat.internalInterfaces or set settings.wan.nat = false";
      }
      {
        assertion = !(cfg.configureInterfaces && s.network.manage);
        message = "services.nixie: settings.network.manage and services.nixie.configureInterfaces both set up the interfaces; "
          + "turn one off";
      }
    ];

    environment.etc."nixie/config.json".source = configFile;
    environment.systemPackages = [ cfg.package ];

    users.users.nixie = {
      isSystemUser = true;
      group = "nixie";
      home = stateDir;
      description = "Nixie router appliance";
    };
    users.groups.nixie = { };

    systemd.tmpfiles.rules = lib.optional (stateDir != defaultStateDir) "d ${stateDir} 0700 nixie nixie - -";

    systemd.services.nixie = {
      description = "Nixie router appliance";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.socket" "nixie-cache-key.service" ];
      restartTriggers = [ configFile ];
      # nix for the build worker, git for flakes, ssh for a remote builder,
      # iproute2/nftables for the network pages and the firewall, wg for the VPN, ipmitool
      # for BMC power control over IPMI; syslinux, GRUB EFI, xorriso, mtools and dosfstools
      # build boot media (docs/boot-media.md)
      path = [ config.nix.package pkgs.git pkgs.openssh pkgs.iproute2 pkgs.nftables pkgs.ipmitool ]
        ++ [ pkgs.syslinux pkgs.grub2_efi pkgs.xorriso pkgs.mtools pkgs.dosfstools ]
        ++ lib.optional vpnOn pkgs.wireguard-tools;
      environment = {
        NIXIE_CONFIG = "/etc/nixie/config.json";
        HOME = stateDir;
      };
      serviceConfig = {
        ExecStartPre = "${lib.getExe cfg.package} config check --config /etc/nixie/config.json";
        ExecStart = "${lib.getExe cfg.package} serve --config /etc/nixie/config.json";
        Restart = "on-failure";
        RestartSec = 2;
        TimeoutStopSec = 15;

        # a static user: DynamicUser cannot hold the capabilities below
        User = "nixie";
        Group = "nixie";
        AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" "CAP_NET_RAW" "CAP_NET_ADMIN" ];
        CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" "CAP_NET_RAW" "CAP_NET_ADMIN" ];
        NoNewPrivileges = true;

        StateDirectory = mkIf (stateDir == defaultStateDir) "nixie";
        StateDirectoryMode = "0700"; # nixie serve makes it 0700 at start anyway
        ReadWritePaths = [ stateDir ];
        UMask = "0027";

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_NETLINK" "AF_UNIX" "AF_PACKET" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
        SystemCallErrorNumber = "EPERM";
      };
    };

    # the key that signs the router's binary cache, made once
    systemd.services.nixie-cache-key = {
      description = "Generate the Nixie binary cache signing key";
      wantedBy = [ "multi-user.target" ];
      before = [ "nix-daemon.service" "nixie.service" ];
      serviceConfig = {
        Type = "oneshot";
        UMask = "0077";
      };
      script = ''
        mkdir -p "$(dirname ${lib.escapeShellArg cfg.cacheKey.secretKeyFile})"
        if [ ! -e ${lib.escapeShellArg cfg.cacheKey.secretKeyFile} ]; then
          ${config.nix.package}/bin/nix-store --generate-binary-cache-key \
            ${lib.escapeShellArg cfg.cacheKey.name} \
            ${lib.escapeShellArg cfg.cacheKey.secretKeyFile} \
            "$(dirname ${lib.escapeShellArg cfg.cacheKey.secretKeyFile})/cache-key.pub"
        fi
        # the appliance signs what it serves (paths the daemon did not build, or built
        # before the key existed) with the same key: readable by its group, nobody else
        chgrp nixie ${lib.escapeShellArg cfg.cacheKey.secretKeyFile}
        chmod 0640 ${lib.escapeShellArg cfg.cacheKey.secretKeyFile}
        # the public half is for everyone (the web UI shows it, installers get it)
        chmod 0755 "$(dirname ${lib.escapeShellArg cfg.cacheKey.secretKeyFile})"
        chmod 0644 "$(dirname ${lib.escapeShellArg cfg.cacheKey.secretKeyFile})/cache-key.pub"
      '';
    };

    nix = {
      settings = {
        experimental-features = [ "nix-command" "flakes" ];
        secret-key-files = [ cfg.cacheKey.secretKeyFile ];
        extra-substituters = s.builder.substituters;
        extra-trusted-public-keys = s.builder.trusted_public_keys;
        # the appliance is an ordinary (untrusted) client of the daemon: it is
        # not in trusted-users, so a compromised web UI cannot rewrite the store
      };
      distributedBuilds = buildMachine != null;
      buildMachines = lib.optional (buildMachine != null) buildMachine;
    };
    # the remote builder's host key, when the config carries one
    programs.ssh.knownHosts = lib.optionalAttrs (buildMachine != null && s.builder.host_key != null) {
      nixie-builder = {
        hostNames = [ buildMachine.hostName ];
        publicKey = s.builder.host_key;
      };
    };

    # --- the router ------------------------------------------------------
    boot.kernel.sysctl = {
      "net.ipv4.conf.all.forwarding" = mkDefault true;
      "net.ipv6.conf.all.forwarding" = mkDefault true;
    };

    networking.nftables.enable = true;
    # reloading NixOS's tables must not wipe the appliance's own (inet nixie)
    networking.nftables.flushRuleset = mkDefault false;
    networking.firewall = {
      enable = mkDefault true;
      # the boot services on the LAN only; DNS and the web UI also from the VPN
      # (what the appliance's ruleset lets in from there too)
      interfaces = mkIf cfg.openFirewall ({
        ${s.lan.interface} = {
          allowedTCPPorts = ports.tcp;
          allowedUDPPorts = ports.udp;
        };
      } // lib.optionalAttrs vpnOn {
        ${s.vpn.interface} = {
          allowedTCPPorts = vpnPorts.tcp;
          allowedUDPPorts = vpnPorts.udp;
        };
      });
      # WireGuard answers on every interface (peers come in through the WAN)
      allowedUDPPorts = lib.optional vpnOn s.vpn.listen_port;
    };
    # kernel WireGuard, loaded at boot: creating the link from the hardened unit
    # (ProtectKernelModules) then does not rely on module autoloading
    boot.kernelModules = lib.optional vpnOn "wireguard";

    networking.interfaces = mkIf cfg.configureInterfaces (
      {
        ${s.lan.interface} = {
          useDHCP = false;
          ipv4.addresses = [ lan ];
        };
      }
      // lib.optionalAttrs (s.wan.interface != null) {
        ${s.wan.interface} =
          if s.wan.address == null then { useDHCP = true; }
          else { useDHCP = false; ipv4.addresses = [ (nixieLib.splitCidr s.wan.address) ]; };
      }
    );
    networking.defaultGateway = mkIf (cfg.configureInterfaces && s.wan.interface != null && s.wan.gateway != null) {
      address = s.wan.gateway;
      interface = s.wan.interface;
    };
  };
}
