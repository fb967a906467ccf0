"""nixos-anywhere exists only on NixOS: run the exact command we build against a
recording executable on PATH. A boundary test: it proves what we hand nixos-anywhere
(and that `run_push_install` hands it exactly that), not what nixos-anywhere does."""

import os
import stat

import pytest

from appliance.nix import install

RECORDER = """#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done > "$RECORD"
echo "### nixos-anywhere (recorder) done"
"""


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nixos-anywhere"
    exe.write_text(RECORDER)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(tmp_path / "argv"))
    return tmp_path / "argv"


def test_push_with_prebuilt_closure(recorder):
    plan = install.InstallPlan(host="web1", target_ip="10.77.0.150", flake="github:me/infra",
                               attr="nixosConfigurations.web1",
                               toplevel="/nix/store/aaaa-nixos-system-web1",
                               disko_script="/nix/store/bbbb-disko", ssh_key="/var/lib/nixie/ssh/id",
                               known_hosts="/var/lib/nixie/ssh/known_hosts")
    r = install.run_push_install(plan)
    assert r.returncode == 0 and "recorder" in r.stdout
    argv = recorder.read_text().splitlines()
    assert argv[:3] == ["--store-paths", "/nix/store/bbbb-disko", "/nix/store/aaaa-nixos-system-web1"]
    assert argv[argv.index("-i") + 1] == "/var/lib/nixie/ssh/id"
    assert argv[-2:] == ["--target-host", "root@10.77.0.150"]
    assert "--flake" not in argv
    # the host key is checked against the pinned one only, and no kexec replaces it
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "--ssh-option"]
    assert "StrictHostKeyChecking=yes" in opts and "StrictHostKeyChecking=no" not in opts
    assert "UserKnownHostsFile=/var/lib/nixie/ssh/known_hosts" in opts
    assert argv[argv.index("--phases") + 1] == "disko,install,reboot"


def test_push_building_from_flake(recorder):
    plan = install.InstallPlan(host="web1", target_ip="10.77.0.150", flake="github:me/infra",
                               attr="nixosConfigurations.web1", known_hosts="/k")
    install.run_push_install(plan)
    argv = recorder.read_text().splitlines()
    assert argv[:2] == ["--flake", "github:me/infra#web1"]
    assert "-i" not in argv and "--store-paths" not in argv
    with pytest.raises(ValueError, match="pinned key"):  # never without the pinned key
        install.nixos_anywhere_command(install.InstallPlan("web1", "10.77.0.150", "f", "a"))


def test_pull_commands_use_router_cache():
    plan = install.InstallPlan(host="web1", target_ip="10.77.0.150", flake="f", attr="a",
                               toplevel="/nix/store/aaaa-sys", disko_script="/nix/store/bbbb-disko",
                               cache_url="http://10.77.0.1:8081/nix-cache",
                               cache_public_key="nixie-1:abc=")
    realise, disko, nixos_install = install.pull_install_commands(plan)
    assert realise[:4] == ["nix-store", "--realise", "/nix/store/bbbb-disko", "/nix/store/aaaa-sys"]
    assert ["--option", "substituters", "http://10.77.0.1:8081/nix-cache"] == realise[4:7]
    assert disko == ["/nix/store/bbbb-disko"]
    assert nixos_install[nixos_install.index("--system") + 1] == "/nix/store/aaaa-sys"
    with pytest.raises(ValueError):
        install.pull_install_commands(install.InstallPlan("h", "ip", "f", "a"))
