{
  description = "Nixie Router: an on-premises router appliance that PXE-boots bare metal into NixOS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      profiles = import ./hw/profiles.nix;
      profilesFor = system: lib.filterAttrs (_: p: p.system == system) profiles;

      # the router image of one hardware profile
      routerSystem = name: profile: lib.nixosSystem {
        inherit (profile) system;
        modules = [
          self.nixosModules.router
          ./nixos-image/image.nix
          profile.module
          {
            services.nixie.enable = true;
            nixie.image.partitionTable = profile.partitionTable;
            networking.hostName = lib.mkDefault "nixie-${name}";
          }
        ];
      };

      # the generic installer the router netboots for hosts in install mode
      installerSystem = system: lib.nixosSystem {
        inherit system;
        modules = [
          self.nixosModules.installer
          {
            networking.hostName = "nixie-installer";
            system.stateVersion = "25.05";
          }
        ];
      };
    in
    {
      overlays.default = final: _prev: {
        nixie = final.callPackage ./nixos-image/package.nix { };
        nixie-agent = final.callPackage ./nixos-image/agent/package.nix { };
      };

      packages = forAllSystems (system: pkgs:
        {
          nixie = pkgs.callPackage ./nixos-image/package.nix { };
          nixie-agent = pkgs.callPackage ./nixos-image/agent/package.nix { };
          default = self.packages.${system}.nixie;
          installer = self.nixosConfigurations."installer-${system}".config.system.build.toplevel;
        }
        // lib.mapAttrs'
          (name: _: lib.nameValuePair "image-${name}" self.nixosConfigurations.${name}.config.system.build.nixieImage)
          (profilesFor system));

      nixosModules = {
        router = ./nixos-image/router.nix;
        netboot-client = ./nixos-image/netboot-client.nix;
        installer = ./nixos-image/installer.nix;
        default = self.nixosModules.router;
      };

      nixosConfigurations =
        lib.mapAttrs routerSystem profiles
        // lib.listToAttrs (map (system: lib.nameValuePair "installer-${system}" (installerSystem system)) systems);

      checks = forAllSystems (system: pkgs:
        {
          package = self.packages.${system}.nixie;
          agent = self.packages.${system}.nixie-agent;
          # the JSON the router module writes passes the appliance's own validation
          config-json = pkgs.runCommand "nixie-config-json-check" { } ''
            ${lib.concatMapStringsSep "\n" (name: ''
              ${lib.getExe self.packages.${system}.nixie} config check \
                --config ${self.nixosConfigurations.${name}.config.services.nixie.configFile}
            '') (lib.attrNames (profilesFor system))}
            touch $out
          '';
        }
        // lib.optionalAttrs (system == "x86_64-linux") {
          vm-test = import ./nixos-image/vm-test.nix { inherit pkgs self nixpkgs; };
        });

      devShells = forAllSystems (system: pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (ps: with ps; [
              flask flask-wtf wtforms pyroute2 dnslib tftpy waitress sqlite-utils zstandard argon2-cffi qrcode cryptography prometheus-client
              pytest pytest-timeout hypothesis requests
            ]))
            pkgs.ruff
            pkgs.nix
            # busybox alone, without its applets shadowing coreutils
            (pkgs.runCommand "busybox-binary" { } ''
              mkdir -p $out/bin
              ln -s ${pkgs.busybox}/bin/busybox $out/bin/busybox
            '')
            pkgs.curl
            pkgs.iproute2
            pkgs.nftables
            pkgs.dnsmasq
            pkgs.qemu
            pkgs.ipxe
            pkgs.OVMF.fd
          ];
          shellHook = ''
            export PYTHONPATH=$PWD''${PYTHONPATH:+:$PYTHONPATH}
          '';
        };
      });
    };
}
