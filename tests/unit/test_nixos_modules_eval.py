"""The `config` halves of the NixOS modules, evaluated with the real Nix evaluator over
stand-ins for nixpkgs' lib and packages (tests/data/nix/module-eval.nix).

This forces every expression the modules compute (a typo in an attribute path, a wrong
operator precedence, a missing argument fails here) and checks the values that matter:
the JSON written to /etc/nixie/config.json, the unit's hardening, the firewall, NAT and
builder settings, the stage-1 commands. Whether each NixOS option name exists and has
the type used is only checked on NixOS (`nix flake check`), and by reading the NixOS
option documentation.
"""

from __future__ import annotations

import json
import re

import pytest

from appliance.config import schema as C
from appliance.router import firewall
from tests.conftest import ROOT
from tests.nixeval import nix_eval, nix_reason, nix_str

pytestmark = pytest.mark.skipif(nix_reason() is not None, reason=str(nix_reason()))

EVAL = ROOT / "tests/data/nix/module-eval.nix"


def module_config(module: str, extra: str = "{ }", inspect: str | None = None,
                  system: str = "x86_64-linux", inspect_config: str | None = None) -> dict:
    args = f"module = {nix_str(ROOT / module)}; extra = {extra}; system = \"{system}\";"
    if inspect:
        args += f" inspect = {inspect};"
    if inspect_config:
        args += f" inspectConfig = {inspect_config};"
    return nix_eval(f"import {nix_str(EVAL)} {{ {args} }}")


ROUTER_ON = "{ services.nixie.enable = true; }"
CONFIG_TEXT = 'c: c.environment.etc."nixie/config.json".source.text'


def router(settings: str = "{ }", **kw) -> dict:
    return module_config("nixos-image/router.nix",
                         f"{{ services.nixie.enable = true; services.nixie.settings = {settings}; }}", **kw)


def test_router_disabled_sets_nothing():
    assert module_config("nixos-image/router.nix")["config"] is None


def test_router_writes_the_settings_as_the_config_json(tmp_path, nixie):
    got = router('{ lan.interface = "enp2s0"; wan.interface = "enp1s0"; }', inspect=CONFIG_TEXT)
    written = json.loads(got["inspected"])
    expected = C.defaults()
    expected["lan"]["interface"], expected["wan"]["interface"] = "enp2s0", "enp1s0"
    expected["tftp"]["ipxe_dir"] = "/nix/store/stub-nixie-ipxe"  # the module's iPXE, not Debian's
    # the binary cache signs with the key the module's Nix daemon signs builds with
    expected["nix"]["cache_key_file"] = "/var/lib/nixie-cache-key/cache-key.sec"
    # the appliance's own ruleset is on, opening the SSH port sshd uses (2222 in module-eval.nix)
    expected["firewall"] = {"enable": True, "ssh_port": 2222}
    assert written == expected
    path = tmp_path / "config.json"
    path.write_text(got["inspected"])
    r = nixie("config", "check", config=path)
    assert r.returncode == 0, r.stderr
    c = got["config"]
    assert c["environment"]["etc"]["nixie/config.json"]["source"].endswith("-nixie-config.json")
    assert c["systemd"]["services"]["nixie"]["restartTriggers"] == [
        c["environment"]["etc"]["nixie/config.json"]["source"]]


IPXE_SCRIPT = "c: c.services.nixie.ipxe.package.script"


def test_router_ipxe_directory_has_every_boot_file():
    script = router(inspect_config=IPXE_SCRIPT)["inspectedConfig"]
    for name in ("undionly.kpxe", "ipxe.efi", "snponly.efi", "snponly-arm64.efi"):
        assert f"/{name}" in script, name
    no_arm = module_config("nixos-image/router.nix",
                           "{ services.nixie.enable = true; services.nixie.ipxe.arm64 = false; }",
                           inspect_config=IPXE_SCRIPT)["inspectedConfig"]
    assert "snponly-arm64.efi" not in no_arm


def test_router_unit_is_hardened():
    unit = router()["config"]["systemd"]["services"]["nixie"]
    sc = unit["serviceConfig"]
    assert sc["ExecStart"].endswith("/bin/nixie serve --config /etc/nixie/config.json")
    assert sc["ExecStartPre"].endswith("/bin/nixie config check --config /etc/nixie/config.json")
    assert (sc["User"], sc["Group"]) == ("nixie", "nixie") and "DynamicUser" not in sc
    caps = ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_NET_ADMIN"]
    assert sc["AmbientCapabilities"] == caps and sc["CapabilityBoundingSet"] == caps
    assert sc["NoNewPrivileges"] is True and sc["ProtectSystem"] == "strict"
    assert sc["RestrictAddressFamilies"] == ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX", "AF_PACKET"]
    assert sc["SystemCallFilter"] == ["@system-service"]
    assert sc["StateDirectory"] == "nixie" and sc["ReadWritePaths"] == ["/var/lib/nixie"]
    assert all(sc[k] is True for k in ("PrivateTmp", "PrivateDevices", "ProtectHome",
                                       "ProtectKernelTunables", "ProtectKernelModules"))
    assert "network-online.target" in unit["after"] and unit["wantedBy"] == ["multi-user.target"]


def test_router_elsewhere_state_dir_gets_a_tmpfiles_rule_instead_of_state_directory():
    c = router('{ state_dir = "/srv/nixie"; }')["config"]
    sc = c["systemd"]["services"]["nixie"]["serviceConfig"]
    assert "StateDirectory" not in sc and sc["ReadWritePaths"] == ["/srv/nixie"]
    assert c["systemd"]["tmpfiles"]["rules"] == ["d /srv/nixie 0700 nixie nixie - -"]
    assert c["users"]["users"]["nixie"]["home"] == "/srv/nixie"


def written_config(got: dict) -> C.Config:
    """The config the module wrote, as `nixie serve` loads it (validated by the appliance)."""
    return C.parse_config(json.loads(got["inspected"]))


def test_router_network_firewall_nat_and_forwarding():
    got = router('{ lan = { interface = "enp2s0"; address = "192.168.8.1/24"; }; '
                 'wan = { interface = "enp1s0"; address = "203.0.113.2/29"; gateway = "203.0.113.1"; }; '
                 'dhcp.range = [ "192.168.8.50" "192.168.8.99" ]; }', inspect=CONFIG_TEXT)
    c = got["config"]
    net = c["networking"]
    assert net["nftables"]["enable"] is True
    assert net["nftables"]["flushRuleset"] is False  # NixOS reloads leave table inet nixie alone
    assert net["firewall"]["interfaces"] == {
        "enp2s0": {"allowedTCPPorts": [53, 8080, 8081], "allowedUDPPorts": [53, 67, 69]}}
    # one NAT: the appliance's ruleset masquerades the LAN out of the WAN, NixOS's NAT stays off
    assert "nat" not in net
    cfg = written_config(got)
    assert cfg.firewall.enable and cfg.wan.nat  # serve applies its ruleset, with the NAT
    ruleset = firewall.render(firewall.FirewallSpec.from_config(cfg))
    assert 'oifname "enp1s0" ip saddr 192.168.8.0/24 masquerade' in ruleset
    assert 'iifname "enp2s0" oifname "enp1s0" accept' in ruleset  # forwarding LAN -> WAN
    assert net["interfaces"]["enp2s0"] == {"useDHCP": False,
                                           "ipv4": {"addresses": [{"address": "192.168.8.1", "prefixLength": 24}]}}
    assert net["interfaces"]["enp1s0"]["ipv4"]["addresses"] == [{"address": "203.0.113.2", "prefixLength": 29}]
    assert net["defaultGateway"] == {"address": "203.0.113.1", "interface": "enp1s0"}
    assert c["boot"]["kernel"]["sysctl"] == {"net.ipv4.conf.all.forwarding": True,
                                             "net.ipv6.conf.all.forwarding": True}
    no_nat = router('{ wan.interface = "eth1"; wan.nat = false; }', inspect=CONFIG_TEXT)
    dhcp_wan = no_nat["config"]["networking"]
    assert dhcp_wan["interfaces"]["eth1"] == {"useDHCP": True}
    assert "nat" not in dhcp_wan and "defaultGateway" not in dhcp_wan
    assert "masquerade" not in firewall.render(firewall.FirewallSpec.from_config(written_config(no_nat)))
    closed = module_config("nixos-image/router.nix", "{ services.nixie.enable = true; "
                           "services.nixie.openFirewall = false; services.nixie.configureInterfaces = false; }")
    assert not closed["config"]["networking"]["firewall"].get("interfaces")
    assert "interfaces" not in closed["config"]["networking"]


def test_router_assertions_catch_bad_combinations():
    def failing(settings):
        return [a["message"] for a in router(settings)["config"]["assertions"] if not a["assertion"]]

    assert failing("{ }") == []
    assert failing('{ wan.interface = "eth0"; }') == [
        "services.nixie: settings.wan.interface must differ from settings.lan.interface"]
    assert failing('{ builder.kind = "remote"; }') == [
        "services.nixie: settings.builder.uri is required when settings.builder.kind is remote"]
    # NAT is the appliance's ruleset's job: wan.nat without it would silently not NAT
    assert failing('{ wan.interface = "eth1"; firewall.enable = false; }') == [
        "services.nixie: settings.wan.nat needs settings.firewall.enable (the appliance's ruleset does the NAT); "
        "to NAT with networking.nat instead, set settings.wan.nat = false"]
    assert failing('{ wan.interface = "eth1"; wan.nat = false; firewall.enable = false; }') == []
    assert failing('{ network.manage = true; }') == [
        "services.nixie: settings.network.manage and services.nixie.configureInterfaces both set up the "
        "interfaces; turn one off"]

    def failing_with(extra):
        got = module_config("nixos-image/router.nix",
                            f'{{ services.nixie.enable = true; services.nixie.settings.wan.interface = "eth1"; {extra} }}')
        return [a["message"] for a in got["config"]["assertions"] if not a["assertion"]]

    double_nat = 'networking.nat = { enable = true; internalInterfaces = [ "eth0" ]; };'
    assert failing_with(double_nat) == [
        "services.nixie: the appliance's ruleset already masquerades the LAN (settings.wan.nat); "
        "remove settings.lan.interface from networking.nat.internalInterfaces or set settings.wan.nat = false"]
    # NAT for containers (another internal interface) is no conflict
    assert failing_with('networking.nat = { enable = true; internalInterfaces = [ "ve-+" ]; };') == []
    assert failing_with('services.nixie.settings.wan.nat = false; ' + double_nat) == []
    assert failing_with("services.nixie.configureInterfaces = false; "
                        "services.nixie.settings.network.manage = true;") == []


def test_router_nix_builders_substituters_and_cache_key():
    c = router('{ builder = { kind = "remote"; uri = "ssh-ng://nix@builder.lan"; max_jobs = 4; '
               'substituters = [ "https://cache.example" ]; '
               'trusted_public_keys = [ "cache.example-1:abc=" ]; }; }')["config"]
    nix = c["nix"]
    assert nix["distributedBuilds"] is True
    assert [(m["hostName"], m["sshUser"], m["protocol"], m["maxJobs"]) for m in nix["buildMachines"]] == [
        ("builder.lan", "nix", "ssh-ng", 4)]
    assert nix["settings"]["extra-substituters"] == ["https://cache.example"]
    assert nix["settings"]["extra-trusted-public-keys"] == ["cache.example-1:abc="]
    assert nix["settings"]["secret-key-files"] == ["/var/lib/nixie-cache-key/cache-key.sec"]
    assert "trusted-users" not in nix["settings"]
    key = c["systemd"]["services"]["nixie-cache-key"]
    assert re.search(r"nix-store --generate-binary-cache-key \\\s+'router-nixie-1' \\\s+"
                     r"'/var/lib/nixie-cache-key/cache-key.sec'", key["script"]), key["script"]
    # made once; on every start readable by the appliance's group (it signs with it too)
    assert "if [ ! -e '/var/lib/nixie-cache-key/cache-key.sec' ]" in key["script"]
    assert "chgrp nixie '/var/lib/nixie-cache-key/cache-key.sec'" in key["script"]
    assert "chmod 0640 '/var/lib/nixie-cache-key/cache-key.sec'" in key["script"]
    assert "unitConfig" not in key
    assert "nix-daemon.service" in key["before"]
    assert router()["config"]["nix"]["distributedBuilds"] is False


def test_router_vpn_opens_wireguard_and_the_tunnel_services():
    got = router('{ wan.interface = "enp1s0"; vpn.enable = true; '
                 'builder = { kind = "remote"; uri = "ssh-ng://nix@b.lan"; host_key = "ssh-ed25519 AAAAC3x"; }; }',
                 inspect=CONFIG_TEXT)
    c = got["config"]
    fw = c["networking"]["firewall"]
    assert fw["allowedUDPPorts"] == [51820]  # peers come in through the WAN
    assert fw["interfaces"]["wg-nixie"] == {"allowedTCPPorts": [53, 8080], "allowedUDPPorts": [53]}
    assert set(fw["interfaces"]) == {"eth0", "wg-nixie"}
    assert "nat" not in c["networking"]
    assert c["boot"]["kernelModules"] == ["wireguard"]
    assert "/nix/store/stub-wireguard-tools" in c["systemd"]["services"]["nixie"]["path"]  # `wg`
    assert c["programs"]["ssh"]["knownHosts"] == {
        "nixie-builder": {"hostNames": ["b.lan"], "publicKey": "ssh-ed25519 AAAAC3x"}}

    # a packet passes NixOS's firewall and then the appliance's ruleset: every port NixOS
    # opens on the LAN and the tunnel must be one the appliance's ruleset accepts there too
    cfg = written_config(got)
    assert cfg.vpn.enable and cfg.firewall.enable
    spec = firewall.FirewallSpec.from_config(cfg)
    ruleset = firewall.render(spec)
    assert 'ip saddr { 10.0.0.0/24, 10.99.0.0/24 } masquerade' in ruleset  # the VPN goes out too
    dns = {spec.dns_port}
    assert set(fw["interfaces"]["eth0"]["allowedTCPPorts"]) <= set(spec.admin_tcp) | set(spec.boot_tcp) | dns
    assert set(fw["interfaces"]["eth0"]["allowedUDPPorts"]) <= set(spec.boot_udp) | dns
    assert set(fw["interfaces"]["wg-nixie"]["allowedTCPPorts"]) <= set(spec.admin_tcp) | dns
    assert set(fw["interfaces"]["wg-nixie"]["allowedUDPPorts"]) <= dns
    assert fw["allowedUDPPorts"] == [spec.vpn_port]
    assert 'iifname "enp1s0" udp dport 51820 accept' in ruleset

    # without the VPN: no WireGuard port, no tunnel interface, no wg, no host key
    plain = router('{ wan.interface = "enp1s0"; }')["config"]
    assert plain["networking"]["firewall"]["allowedUDPPorts"] == []
    assert set(plain["networking"]["firewall"]["interfaces"]) == {"eth0"}
    assert plain["boot"]["kernelModules"] == []
    assert "/nix/store/stub-wireguard-tools" not in plain["systemd"]["services"]["nixie"]["path"]
    assert plain["programs"]["ssh"]["knownHosts"] == {}


def test_router_on_aarch64_cross_builds_the_x86_ipxe():
    script = router(system="aarch64-linux", inspect_config=IPXE_SCRIPT)["inspectedConfig"]
    # on aarch64 the x86 binaries come from pkgsCross.gnu64 (stub: an overridden ipxe)
    assert "undionly.kpxe" in script and "snponly-arm64.efi" in script


# ------------------------------------------------------------ netboot-client


def test_netboot_client_scripted_stage1_keeps_the_store():
    c = module_config("nixos-image/netboot-client.nix")["config"]
    assert c["fileSystems"]["/"] == {"device": "none", "fsType": "tmpfs",
                                     "options": ["mode=0755", "size=75%"]}
    cmds = c["boot"]["initrd"]["postMountCommands"]
    assert "cp -a /nix/store/. $targetRoot/nix/store/" in cmds
    assert "for r in /nix/.nixie/registration /nix/.nix-netboot-serve-db/registration; do" in cmds
    assert 'cp "$r" "$targetRoot$r"' in cmds
    assert c["boot"]["initrd"]["systemd"]["services"] == {}
    boot = c["boot"]["postBootCommands"]
    assert "for r in /nix/.nixie/registration /nix/.nix-netboot-serve-db/registration; do" in boot
    assert '/bin/nix-store --load-db < "$r"' in boot
    assert "nix-env -p /nix/var/nix/profiles/system --set /run/current-system" in boot
    agent = c["systemd"]["services"]["nixie-agent"]
    # install boots report through the installer
    assert agent["unitConfig"]["ConditionKernelCommandLine"] == ["nixie.api", "!nixie.mode=install"]
    assert agent["after"] == ["network-online.target"]
    assert "/bin/nixie-agent booted" in agent["script"]
    assert agent["serviceConfig"]["DynamicUser"] is True
    # no disko in this configuration: nothing linked into the toplevel
    assert c["system"]["extraSystemBuilderCmds"] == ""


def test_netboot_client_links_the_disko_script_into_the_toplevel():
    """The flake's disk layout travels with the system: <toplevel>/nixie-disko, what the
    installer (nixie.mode=install) and the push install (nixos-anywhere --store-paths)
    apply; and the agent reports after sshd made the host key it sends."""
    c = module_config("nixos-image/netboot-client.nix",
                      '{ system.build.diskoScript = { outPath = "/nix/store/stub-disko-script"; }; '
                      'services.openssh.enable = true; }')["config"]
    assert c["system"]["extraSystemBuilderCmds"].strip() == \
        "ln -s /nix/store/stub-disko-script $out/nixie-disko"
    assert c["systemd"]["services"]["nixie-agent"]["after"] == ["network-online.target",
                                                                "sshd.service"]


def test_netboot_client_systemd_stage1_uses_a_unit_instead():
    c = module_config("nixos-image/netboot-client.nix",
                      "{ boot.initrd.systemd.enable = true; }")["config"]
    assert "postMountCommands" not in c["boot"]["initrd"]  # systemd stage 1 refuses it
    unit = c["boot"]["initrd"]["systemd"]["services"]["nixie-keep-store"]
    assert "cp -a /nix/store/. /sysroot/nix/store/" in unit["script"]
    assert unit["after"] == ["sysroot.mount"] and "initrd-fs.target" in unit["before"]
    assert unit["unitConfig"] == {"DefaultDependencies": False}
    assert c["boot"]["initrd"]["systemd"]["initrdBin"] == ["/nix/store/stub-coreutils"]


def test_installer_wraps_its_script_with_the_tools_and_keys():
    got = module_config("nixos-image/installer.nix",
                        '{ nixie.netboot.agent.package = { outPath = "/nix/store/stub-agent"; }; '
                        'nixie.installer.trustedPublicKeys = [ "a-1:x=" "b-1:y=" ]; }',
                        inspect="c: (builtins.head c.environment.systemPackages).script")
    script = got["inspected"]
    assert "--set NIXIE_TRUSTED_KEYS 'a-1:x= b-1:y='" in script
    assert "/nix/store/stub-agent/bin" in script and "/nix/store/stub-nixos-install/bin" in script
    c = got["config"]
    assert "netboot" not in c.get("nixie", {})  # the agent skips install boots by itself
    unit = c["systemd"]["services"]["nixie-install"]
    assert unit["unitConfig"]["ConditionKernelCommandLine"] == ["nixie.mode=install", "nixie.system"]
    assert unit["serviceConfig"]["ExecStart"].endswith("/bin/nixie-install")
    assert got["imports"] == [str(ROOT / "nixos-image/netboot-client.nix")]


@pytest.mark.parametrize("table, loader", [("efi", "systemd-boot"), ("legacy", "grub")])
def test_image_module_calls_make_disk_image_for_its_partition_table(table, loader):
    c = module_config("nixos-image/image.nix", f'{{ nixie.image.partitionTable = "{table}"; }}')["config"]
    img = c["system"]["build"]["nixieImage"]
    assert (img["stub"], img["format"], img["partitionTableType"]) == ("make-disk-image", "raw", table)
    assert c["fileSystems"]["/"]["device"] == "/dev/disk/by-label/nixos"
    if loader == "systemd-boot":
        assert c["boot"]["loader"]["systemd-boot"] == {"enable": True}
        assert c["fileSystems"]["/boot"]["device"] == "/dev/disk/by-label/ESP"
        assert c["boot"]["loader"]["grub"] == {"enable": False}
    else:
        assert c["boot"]["loader"]["grub"] == {"enable": True, "device": "/dev/sda"}
        assert "/boot" not in c["fileSystems"]


# ------------------------------------------------------------------------ hw/


@pytest.mark.parametrize("profile", ["generic-x86_64", "apu2", "n100", "qemu"])
def test_hw_profile_evaluates_whole(profile):
    got = module_config(f"hw/{profile}.nix")
    c = got["config"]
    assert set(c["services"]["nixie"]["settings"]) == {"lan", "wan"}
    params = c["boot"]["kernelParams"]
    if profile == "apu2":
        assert "console=ttyS0,115200n8" in params and "igb" in c["boot"]["initrd"]["kernelModules"]
        grub = c["boot"]["loader"]["grub"]
        assert grub["device"] == "/dev/sda" and "serial --unit=0 --speed=115200" in grub["extraConfig"]
    elif profile == "n100":
        assert "igc" in c["boot"]["initrd"]["kernelModules"]
        assert "nvme" in c["boot"]["initrd"]["availableKernelModules"]
    elif profile == "qemu":
        assert got["imports"] == [str(ROOT / "tests/data/nix/stub-nixos/modules/profiles/qemu-guest.nix")]
        assert "console=ttyS0,115200n8" in params
    if profile in ("generic-x86_64", "qemu"):
        assert c["networking"]["usePredictableInterfaceNames"] is False


def test_netboot_client_cached_puts_the_script_and_a_static_nix_in_the_initrd():
    """nixie.netboot.cached: the initrd has nixos-image/cached/nixie-cached (the script
    tests/netns/test_cached_nixos_fetch.py runs) at /nixie-cached, a static nix and
    mkfs.ext4, the network up; stage 1 runs it on nixie.mode=cached before (and instead of)
    keeping the initramfs store."""
    off = module_config("nixos-image/netboot-client.nix")["config"]["boot"]["initrd"]
    assert "nixie-cached" not in off["postMountCommands"] and "extraFiles" not in off
    c = module_config("nixos-image/netboot-client.nix",
                      '{ nixie.netboot.cached.enable = true; '
                      'nixie.netboot.cached.device = "/dev/nvme0n1"; }')["config"]
    initrd = c["boot"]["initrd"]
    source = initrd["extraFiles"]["/nixie-cached"]["source"]  # the file, copied to the store
    assert source.startswith("/nix/store/") and source.endswith("-nixie-cached")
    assert "copy_bin_and_libs /nix/store/stub-nixStatic/bin/nix" in initrd["extraUtilsCommands"]
    assert "copy_bin_and_libs /nix/store/stub-e2fsprogs/bin/mkfs.ext4" in initrd["extraUtilsCommands"]
    assert initrd["network"]["enable"] is True
    cmds = initrd["postMountCommands"]
    run = "NIXIE_CACHED_DEVICE='/dev/nvme0n1' sh /nixie-cached boot \"$targetRoot\""
    assert run in cmds and cmds.index(run) < cmds.index("cp -a /nix/store/.")
    assert "! grep -qw nixie.mode=cached /proc/cmdline" in cmds  # no store copy over the disk's
    assert c["assertions"][0]["assertion"] is True
    on_systemd = module_config("nixos-image/netboot-client.nix",
                               "{ nixie.netboot.cached.enable = true; boot.initrd.systemd.enable = true; }")
    assert on_systemd["config"]["assertions"][0]["assertion"] is False
    # the script reads the kernel line keys the router writes (netservices/httpboot cached_params)
    script = (ROOT / "nixos-image/cached/nixie-cached").read_text()
    for key in ("init=", "nixie.api=", "nixie.token=", "nixie.cache_key="):
        assert f"{key}*)" in script
    assert "nixie.netboot.cached.enable" in (ROOT / "docs/install.md").read_text()
