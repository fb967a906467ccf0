# checks.x86_64-linux.vm-test: the router VM serves a PXE-booting client VM
# until the client's agent reports `booted`.
#
# The router runs nixosModules.router on the test VLAN (eth1). The client is
# a bare QEMU with no disk that boots from its NIC (SeaBIOS + iPXE ROM). Its
# system (netboot-client module + vm-test-client.nix) is built outside the
# VMs and copied into the router's store; inside, the router evaluates the
# same configuration from a flake whose inputs are the store copies of
# nixpkgs and this repository, finds the result already built, and serves it:
# DHCP -> TFTP undionly.kpxe -> iPXE -> HTTP script -> kernel + initrd with
# the closure -> stage 1 keeps the store -> stage 2 -> nixie-agent `booted`.
{ pkgs, self, nixpkgs }:
let
  inherit (pkgs) lib;
  qemu-common = import (nixpkgs + "/nixos/lib/qemu-common.nix") { inherit lib; inherit (pkgs) stdenv; };

  clientMac = "52:54:00:12:01:99";

  clientSystem = (nixpkgs.lib.nixosSystem {
    system = "x86_64-linux";
    modules = [ self.nixosModules.netboot-client ./vm-test-client.nix ];
  }).config.system.build.toplevel;

  # the flake the router builds the client from, offline
  clientFlake = pkgs.runCommand "nixie-vm-test-flake" { } ''
    mkdir -p $out
    cp ${./vm-test-client.nix} $out/client.nix
    cat > $out/flake.nix <<'EOF'
    {
      inputs.nixpkgs.url = "path:${nixpkgs}";
      inputs.nixie.url = "path:${self}";
      inputs.nixie.inputs.nixpkgs.follows = "nixpkgs";
      outputs = { nixpkgs, nixie, ... }: {
        nixosConfigurations.client = nixpkgs.lib.nixosSystem {
          system = "x86_64-linux";
          modules = [ nixie.nixosModules.netboot-client ./client.nix ];
        };
      };
    }
    EOF
  '';

  clientStart = lib.concatStringsSep " " [
    (qemu-common.qemuBinary pkgs.qemu_test)
    "-m 4096"
    "-boot order=n"
    ''-netdev vde,id=lan,sock="$QEMU_VDE_SOCKET_1"''
    "-device virtio-net-pci,netdev=lan,mac=${clientMac}"
  ];
in
pkgs.testers.runNixOSTest {
  name = "nixie-pxe-boot";

  nodes.router = { config, lib, pkgs, ... }: {
    imports = [ self.nixosModules.router ];
    virtualisation = {
      vlans = [ 1 ];
      memorySize = 4096;
      diskSize = 8192;
      cores = 2;
      additionalPaths = [ clientSystem clientFlake "${nixpkgs}" "${self}" ];
    };
    services.nixie = {
      enable = true;
      # the test framework gives eth1 its address (networking.primaryIPAddress)
      configureInterfaces = false;
      ipxe.arm64 = false;
      settings = {
        lan = { interface = "eth1"; address = "${config.networking.primaryIPAddress}/24"; domain = "test"; };
        dhcp.range = [ "192.168.1.100" "192.168.1.199" ];
        dns.upstream = [ ];
      };
    };
    nix.settings.substituters = lib.mkForce [ ];
    environment.systemPackages = [ pkgs.jq ];
  };

  testScript = { nodes, ... }: ''
    import json

    lan_ip = "${nodes.router.networking.primaryIPAddress}"
    # runuser keeps the files the CLI creates in the state directory the service's
    NIXIE = "runuser -u nixie -- /run/current-system/sw/bin/nixie"

    def nixie(args, timeout=120):
        return router.succeed(f"{NIXIE} {args}", timeout=timeout)

    router.start()
    router.wait_for_unit("nixie.service")
    router.wait_for_open_port(8080, lan_ip)
    router.wait_for_open_port(8081, lan_ip)

    with subtest("the written config is the one the service runs with"):
        nixie("config check --config /etc/nixie/config.json")
        cfg = json.loads(router.succeed("cat /etc/nixie/config.json"))
        assert cfg["lan"]["interface"] == "eth1", cfg
        assert cfg["tftp"]["ipxe_dir"].startswith("/nix/store/"), cfg
        router.succeed("test -e " + cfg["tftp"]["ipxe_dir"] + "/undionly.kpxe")

    with subtest("the hardening holds"):
        props = router.succeed("systemctl show nixie.service -p User -p NoNewPrivileges -p ProtectSystem")
        assert "User=nixie" in props and "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props, props

    with subtest("the router builds the client's system from a flake, offline"):
        router.succeed(
            "cp -r ${clientFlake} /var/lib/nixie/test-flake",
            "chmod -R u+w /var/lib/nixie/test-flake",
            "chown -R nixie:nixie /var/lib/nixie/test-flake",
        )
        nixie("flake add path:/var/lib/nixie/test-flake")
        nixie("host add client --mac ${clientMac} --flake path:/var/lib/nixie/test-flake --mode netboot")
        nixie("build client --wait", timeout=1800)
        # the router's generation is the very path built outside the VM
        # (generations carry their toplevel; `host show` lists them)
        shown = nixie("host show client --json")
        assert "${clientSystem}" in shown, shown

    with subtest("the client PXE-boots and its agent reports booted"):
        client = create_machine(${builtins.toJSON clientStart})
        client.start()
        router.wait_until_succeeds(
            f"{NIXIE} host show client --json | jq -e '.state == \"booted\"'",
            timeout=1200,
        )
        host = json.loads(nixie("host show client --json"))
        assert host["ip"].rpartition(".")[0] == lan_ip.rpartition(".")[0], host
        client.crash()
  '';
}
