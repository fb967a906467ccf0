"""flake.nix, the NixOS modules' option trees, the router module's pure helpers and
the hw/ profiles, evaluated with the real Nix evaluator and no nixpkgs.

flake.nix's `outputs` runs against a stand-in nixpkgs (tests/data/nix/flake-outputs.nix):
that proves the outputs function evaluates and has the right shape (which packages,
checks, configurations per system, and what each configuration is made of). The modules
are imported with the stand-in lib and only their `options` are read; their `config`
halves need nixpkgs' module system and are checked by the flake's own checks on NixOS.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from appliance.config import schema as C
from tests.conftest import ROOT
from tests.nixeval import STUB_LIB, nix_eval, nix_reason, nix_str, settings_expr

pytestmark = pytest.mark.skipif(nix_reason() is not None, reason=str(nix_reason()))

SYSTEMS = {"x86_64-linux", "aarch64-linux"}
PROFILES = {
    # name: (system, partition table)
    "generic-x86_64": ("x86_64-linux", "efi"),
    "apu2": ("x86_64-linux", "legacy"),
    "n100": ("x86_64-linux", "efi"),
    "qemu-x86_64": ("x86_64-linux", "efi"),
    "qemu-aarch64": ("aarch64-linux", "efi"),
}


@pytest.fixture(scope="module")
def flake():
    return nix_eval(f"import {nix_str(ROOT / 'tests/data/nix/flake-outputs.nix')} "
                    f"{{ root = {nix_str(ROOT)}; }}")


def test_flake_has_nixpkgs_as_its_only_input(flake):
    assert list(flake["inputs"]) == ["nixpkgs"]
    assert flake["inputs"]["nixpkgs"].startswith("github:NixOS/nixpkgs/")


def test_flake_outputs_per_system(flake):
    assert set(flake["outputs"]) >= {"packages", "nixosModules", "nixosConfigurations",
                                     "checks", "devShells", "overlays"}
    for kind in ("packages", "checks", "devShells"):
        assert set(flake[kind]) == SYSTEMS, kind
    for system in SYSTEMS:
        images = {f"image-{n}" for n, (s, _) in PROFILES.items() if s == system}
        assert set(flake["packages"][system]) == {"nixie", "nixie-agent", "default", "installer"} | images
        assert flake["devShells"][system] == ["default"]
        assert {"package", "agent", "config-json"} <= set(flake["checks"][system])
    assert "vm-test" in flake["checks"]["x86_64-linux"]
    assert flake["nixiePackage"] == str(ROOT / "nixos-image/package.nix")
    assert flake["agentPackage"] == str(ROOT / "nixos-image/agent/package.nix")


def test_flake_modules_are_the_files(flake):
    mods = flake["nixosModules"]
    assert mods == {
        "router": str(ROOT / "nixos-image/router.nix"),
        "netboot-client": str(ROOT / "nixos-image/netboot-client.nix"),
        "installer": str(ROOT / "nixos-image/installer.nix"),
        "default": str(ROOT / "nixos-image/router.nix"),
    }


def test_a_configuration_per_profile_and_an_installer_per_system(flake):
    confs = flake["nixosConfigurations"]
    assert set(confs) == set(PROFILES) | {f"installer-{s}" for s in SYSTEMS}
    for name, (system, table) in PROFILES.items():
        c = confs[name]
        assert c["system"] == system
        assert c["modules"][:3] == [str(ROOT / "nixos-image/router.nix"),
                                    str(ROOT / "nixos-image/image.nix"),
                                    str(ROOT / ("hw/" + ("qemu" if name.startswith("qemu") else name) + ".nix"))]
        assert c["settings"] == [{"enable": True}]
        assert c["partitionTables"] == [table]
    for system in SYSTEMS:
        assert confs[f"installer-{system}"]["modules"][0] == str(ROOT / "nixos-image/installer.nix")


def module_options_expr(module: str, config: str = "{ }") -> str:
    return f"""
let
  lib = import {nix_str(STUB_LIB)};
  m = import {nix_str(ROOT / module)} {{ inherit lib; config = {config}; pkgs = {{ }}; modulesPath = "/stub"; }};
  isOption = v: builtins.isAttrs v && (v._type or null) == "option";
  walk = prefix: tree: builtins.concatMap (name:
    let node = tree.${{name}}; key = prefix + name; in
    if isOption node then [ key ] else if builtins.isAttrs node then walk (key + ".") node else [ ])
    (builtins.attrNames tree);
in {{ options = walk "" m.options; raw = m.options; }}
"""


def test_router_module_mounts_the_settings_mirror_under_services_nixie(flake):
    opts = nix_eval(f"({module_options_expr('nixos-image/router.nix')}).options")
    settings = {o.removeprefix("services.nixie.settings.") for o in opts
                if o.startswith("services.nixie.settings.")}
    assert settings == {k for k, _ in C.iter_keys()}
    others = {o for o in opts if not o.startswith("services.nixie.settings.")}
    assert others == {
        "services.nixie.enable", "services.nixie.package", "services.nixie.configFile",
        "services.nixie.ipxe.package", "services.nixie.ipxe.arm64",
        "services.nixie.configureInterfaces", "services.nixie.openFirewall",
        "services.nixie.cacheKey.name", "services.nixie.cacheKey.secretKeyFile",
    }


def test_netboot_client_registration_path_is_the_contract():
    expr = module_options_expr("nixos-image/netboot-client.nix")
    got = nix_eval(f"let r = {expr}; in {{ options = r.options; "
                   f"registration = r.raw.nixie.netboot.registration.default; }}")
    assert got["registration"] == "/nix/.nixie/registration"
    assert set(got["options"]) == {
        "nixie.netboot.enable", "nixie.netboot.registration", "nixie.netboot.rootSize",
        "nixie.netboot.agent.enable", "nixie.netboot.agent.package",
        "nixie.netboot.cached.enable", "nixie.netboot.cached.device",
        "nixie.netboot.cached.nix",
    }


def test_installer_module_options():
    opts = nix_eval(f"({module_options_expr('nixos-image/installer.nix')}).options")
    assert opts == ["nixie.installer.trustedPublicKeys"]


# ---------------------------------------------------------------- lib.nix


def lib_eval(body: str):
    return nix_eval(f"let l = import {nix_str(ROOT / 'nixos-image/lib.nix')}; in {body}")


def test_split_cidr_and_port_of():
    assert lib_eval('l.splitCidr "192.168.50.1/24"') == {"address": "192.168.50.1",
                                                          "prefixLength": 24}
    assert lib_eval('map l.portOf [ "0.0.0.0:69" "[::]:53" "10.0.0.1:8080" ]') == [69, 53, 8080]


@pytest.mark.parametrize("expr", ['l.splitCidr "10.0.0.1"', 'l.portOf "10.0.0.1"'])
def test_lib_refuses_malformed_values_with_a_message(expr):
    with pytest.raises(AssertionError, match="nixie: 10.0.0.1 is not"):
        lib_eval(expr)


def settings_values(overrides: str = "{ }"):
    """Nix expression: the default settings overlaid with OVERRIDES (what the module sees)."""
    return f"(builtins.fromJSON (builtins.toJSON ({settings_expr(overrides)}).config))"


def test_lan_ports_follow_the_settings():
    assert lib_eval(f"l.lanPorts {settings_values()}") == {"udp": [53, 67, 69], "tcp": [53, 8080, 8081]}
    proxy = settings_values('{ dhcp.mode = "proxy"; dns.enable = false; '
                            'web.listen = [ "10.0.0.1:443" "10.0.0.1:8080" ]; }')
    assert lib_eval(f"l.lanPorts {proxy}") == {"udp": [67, 69, 4011], "tcp": [443, 8080, 8081]}
    off = settings_values('{ dhcp.mode = "off"; tftp.listen = "10.0.0.1:6969"; }')
    assert lib_eval(f"l.lanPorts {off}")["udp"] == [53, 6969]


def test_vpn_ports_are_dns_and_the_web_ui_never_the_boot_services():
    assert lib_eval(f"l.vpnPorts {settings_values()}") == {"udp": [53], "tcp": [53, 8080]}
    other = settings_values('{ dns.listen = [ "10.0.0.1:5353" ]; web.listen = [ "10.0.0.1:443" "10.99.0.1:8443" ]; '
                            'dhcp.mode = "proxy"; }')
    assert lib_eval(f"l.vpnPorts {other}") == {"udp": [5353], "tcp": [443, 5353, 8443]}
    no_dns = settings_values("{ dns.enable = false; }")
    assert lib_eval(f"l.vpnPorts {no_dns}") == {"udp": [], "tcp": [8080]}


def test_build_machine_from_the_builder_settings():
    local = settings_values()
    assert lib_eval(f"l.buildMachineOf ({local}).builder") is None
    remote = settings_values('{ builder = { kind = "remote"; uri = "ssh-ng://nix@builder.lan"; '
                             'ssh_key = "/run/keys/builder"; systems = [ "x86_64-linux" "aarch64-linux" ]; '
                             'max_jobs = 8; }; }')
    assert lib_eval(f"l.buildMachineOf ({remote}).builder") == {
        "protocol": "ssh-ng", "sshUser": "nix", "hostName": "builder.lan",
        "sshKey": "/run/keys/builder", "systems": ["x86_64-linux", "aarch64-linux"],
        "maxJobs": 8, "supportedFeatures": ["big-parallel"],
    }
    no_user = settings_values('{ builder = { kind = "remote"; uri = "ssh://b"; }; }')
    got = lib_eval(f"l.buildMachineOf ({no_user}).builder")
    assert (got["protocol"], got["sshUser"], got["hostName"]) == ("ssh", None, "b")
    bad = settings_values('{ builder = { kind = "remote"; uri = "http://b"; }; }')
    with pytest.raises(AssertionError, match="is not ssh://"):
        lib_eval(f"l.buildMachineOf ({bad}).builder")


# ---------------------------------------------------------------- hw/


def profile_settings_expr(name: str) -> str:
    return (f"(import {nix_str(ROOT / 'hw' / (name + '.nix'))} {{ lib = import {nix_str(STUB_LIB)}; "
            f"modulesPath = \"/stub\"; config = {{ }}; pkgs = {{ }}; }}).services.nixie.settings")


def profile_file(name: str) -> str:
    return "qemu" if name.startswith("qemu") else name


def test_profiles_list_every_hw_module():
    listed = nix_eval(f"builtins.mapAttrs (_: p: {{ inherit (p) system partitionTable; "
                      f"module = toString p.module; }}) (import {nix_str(ROOT / 'hw/profiles.nix')})")
    assert {n: (p["system"], p["partitionTable"]) for n, p in listed.items()} == PROFILES
    modules = {p["module"] for p in listed.values()}
    on_disk = {str(p) for p in (ROOT / "hw").glob("*.nix") if p.name != "profiles.nix"}
    assert modules == on_disk


def readme_rows():
    rows = {}
    for line in (ROOT / "hw/README.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = {"system": cells[2], "lan": cells[5].strip("`"),
                                         "wan": cells[6].strip("`")}
    return rows


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_config_is_valid_and_matches_the_readme(name, tmp_path, nixie):
    raw = nix_eval(profile_settings_expr(profile_file(name)))
    options = {k for k, _ in C.iter_keys()}

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    assert set(leaves(raw)) <= options  # on NixOS an unknown one is an evaluation error
    written = nix_eval(settings_expr(profile_settings_expr(profile_file(name))))["config"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(written))
    r = nixie("config", "check", "--json", config=path)
    assert r.returncode == 0, r.stderr
    checked = json.loads(r.stdout)
    row = readme_rows()[name]
    assert (checked["lan"]["interface"], checked["wan"]["interface"]) == (row["lan"], row["wan"])
    assert row["system"] == PROFILES[name][0]
    assert checked["lan"]["interface"] != checked["wan"]["interface"]
    assert re.fullmatch(r"(eth|enp)\d(s\d)?", checked["lan"]["interface"])


def test_readme_tables_exactly_the_profiles():
    assert set(readme_rows()) == set(PROFILES)


# ------------------------------------------------------------ package, checks, shell


def pyproject():
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dist_name(requirement: str) -> str:
    """PyPI requirement -> nixpkgs python3Packages attribute (lowercase, `_` and `.` -> `-`)."""
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
    return re.sub(r"[_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def package():
    return nix_eval(f"import {nix_str(ROOT / 'tests/data/nix/package-eval.nix')} "
                    f"{{ root = {nix_str(ROOT)}; }}")


def test_package_depends_on_exactly_the_pyproject_dependencies(package):
    wanted = [dist_name(r) for r in pyproject()["project"]["dependencies"]]
    missing = sorted(set(wanted) - set(package["dependencies"]))
    assert not missing, (f"add to nixos-image/package.nix (dependencies) and to the name list "
                         f"of tests/data/nix/package-eval.nix: {missing}")
    assert sorted(package["dependencies"]) == sorted(wanted)
    assert package["build-system"] == [dist_name(r) for r in pyproject()["build-system"]["requires"]]
    assert package["version"] == pyproject()["project"]["version"]
    assert package["pythonRelaxDeps"] is True and package["pyproject"] is True
    assert package["meta"]["mainProgram"] == "nixie" == next(iter(pyproject()["project"]["scripts"]))


def test_package_source_holds_every_python_package(package):
    rooms = {p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    files = {os.path.relpath(f, ROOT) for f in package["src"]["files"]}
    assert rooms | {"pyproject.toml", "README.md"} == files
    assert set(package["pythonImportsCheck"]) >= rooms


def test_dev_shell_has_the_dependencies_and_test_tools(flake):
    python = set(flake["devShell"]["python"])
    assert {dist_name(r) for r in pyproject()["project"]["dependencies"]} <= python
    assert {"pytest", "pytest-timeout", "hypothesis"} <= python
    assert flake["devShell"]["packages"][0] == "/nix/store/stub-python3-env"


def test_config_json_check_validates_every_profile_of_the_system(flake):
    script = flake["configJsonCheck"]
    checked = re.findall(r"/bin/nixie config check \\\n\s+--config /nix/store/stub-config-(\S+)", script)
    assert sorted(checked) == sorted(f"nixie-{n}" for n, (s, _) in PROFILES.items()
                                     if s == "x86_64-linux")
    assert script.rstrip().endswith("touch $out")
