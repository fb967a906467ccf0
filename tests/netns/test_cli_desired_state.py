"""What the admin sets with the CLI is what the running appliance serves: `nixie
config set` and `nixie host rollback` while `nixie serve` runs in a namespace,
observed in the next boot script fetched over HTTP (the real nix builds the lab
flake twice), with serve neither restarted nor replaced."""

from __future__ import annotations

import json
import re
import uuid

from lab import flake as labflake
from lab.netns import Netns, bridge, serving
from tests.conftest import run_nixie
from tests.golden import assert_golden
from tests.netns.desired_lab import wait_for
from tests.netns.serve_lab import http_get
from tests.nixlab import lab_config
from tests.vm.pxe_lab import add_and_build

MAC = "52:54:00:5e:00:31"
SCRIPT_URL = f"http://10.77.0.1:8081/boot/{MAC}.ipxe"


def boot_script(ns) -> str:
    """The host's boot script once it boots something (while the default entry's
    initrd is being made, serve answers with a retry script)."""
    def booting() -> str | None:
        status, body = http_get(ns, SCRIPT_URL)
        assert status == 200, body
        return None if "Retrying in" in body else body

    return wait_for("a boot script that boots the host", booting, timeout=90, every=1)


def normalised(script: str, toplevels: dict[str, str]) -> str:
    """The script with what changes from run to run named: each generation's
    store path (T1, T2), the per-boot tokens and the build dates."""
    for name, toplevel in toplevels.items():
        script = script.replace(toplevel.removeprefix("/nix/store/"), name)
    script = re.sub(r"nixie\.token=\S+", "nixie.token=TOKEN", script)
    return re.sub(r"\(\d{4}-\d\d-\d\d \d\d:\d\d\)", "(DATE)", script)


def default_entry(script: str) -> tuple[str, str]:
    """(item line, kernel line) of the menu's default entry."""
    label = re.search(r"^choose .* --default (gen\d+) selected", script, re.M).group(1)
    item = re.search(rf"^item --key \d+ {label} .*$", script, re.M).group(0)
    section = script.split(f"\n:{label}\n", 1)[1]
    kernel = next(x for x in section.splitlines() if x.startswith("kernel "))
    return item, kernel


def test_config_set_and_rollback_reach_the_next_boot_script(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"desired 1 {uuid.uuid4()}")
    cfg_path, _cfg = lab_config(tmp_path)

    def nixie(*args, timeout=60):
        return run_nixie(*args, config=cfg_path, timeout=timeout)

    def serve_status() -> dict:
        return json.loads(nixie("status", "--json").stdout)["serve"]

    def toplevels() -> dict[str, str]:
        host = json.loads(nixie("host", "show", "demo", "--json").stdout)
        return {f"T{g['number']}": g["toplevel"] for g in host["generations"]}

    with Netns() as ns:
        bridge(ns, "br-lan", "10.77.0.1/24")
        with serving(ns, cfg_path, tmp_path / "serve.log", [("10.77.0.1", 8081)],
                     timeout=30) as proc:
            add_and_build(cfg_path, flake, {"demo": MAC})
            t1 = toplevels()["T1"]
            script = boot_script(ns)
            assert "choose --timeout 5000 --default gen0 " in script  # the file's 5 s
            assert "nixie.test=1" not in script
            before = serve_status()
            assert before["running"] and before["pid"] == proc.pid

            # (a) boot settings: the next script has them, serve keeps running as it was
            r = nixie("config", "set", "boot.menu_timeout_seconds=7",
                      "boot.cmdline=console=ttyS0 nixie.test=1")
            assert r.returncode == 0, r.stdout + r.stderr
            assert r.stdout.splitlines()[:2] == ["boot.menu_timeout_seconds = 7",
                                                 'boot.cmdline = "console=ttyS0 nixie.test=1"']
            applied = r.stdout.splitlines()[2]
            assert applied.startswith("applied to: ") and "httpboot" in applied, r.stdout
            script = boot_script(ns)
            item, kernel = default_entry(script)
            assert "choose --timeout 7000 --default gen0 " in script
            assert kernel.endswith(" console=ttyS0 nixie.test=1") and t1 in kernel
            assert_golden("cli-desired-menu.ipxe", normalised(script, toplevels()))
            after = serve_status()
            assert proc.poll() is None and after["pid"] == before["pid"]
            assert after["services"]["httpboot"]["restarts"] == \
                before["services"]["httpboot"]["restarts"]
            config_show = json.loads(nixie("config", "show", "--json").stdout)
            assert config_show["boot.menu_timeout_seconds"] == {"value": 7, "source": "override"}

            # (b) a second generation, then roll back to the first
            labflake.set_release(flake, f"desired 2 {uuid.uuid4()}")
            r = nixie("build", "demo", "--wait", "--timeout", "300", "--json", timeout=320)
            assert r.returncode == 0, r.stdout + r.stderr
            t2 = json.loads(r.stdout)["toplevel"]
            assert t2 != t1
            item, kernel = default_entry(boot_script(ns))
            assert " generation 2 (" in item and item.endswith(" (current)") and t2 in kernel

            r = nixie("host", "rollback", "demo")
            assert r.returncode == 0, r.stderr
            assert r.stdout == "host demo now boots generation 1\n"
            script = boot_script(ns)
            item, kernel = default_entry(script)
            assert "--default gen1 " in script and t1 in kernel
            assert " generation 1 (" in item and item.endswith(" (current)")
            assert re.search(r"^item --key 0 gen0 \[0\] generation 2 \(", script, re.M)
            assert_golden("cli-desired-rollback-menu.ipxe", normalised(script, toplevels()))

            # no menu: the one kernel line is the current generation's
            r = nixie("config", "set", "boot.menu_timeout_seconds=0")
            assert r.returncode == 0 and "applied to: " in r.stdout, r.stdout + r.stderr
            script = boot_script(ns)
            assert "choose" not in script and "menu" not in script
            [kernel] = [x for x in script.splitlines() if x.startswith("kernel ")]
            assert t1 in kernel and t2 not in script and kernel.endswith(" nixie.test=1")
            assert_golden("cli-desired-rollback-nomenu.ipxe", normalised(script, toplevels()))

            r = nixie("host", "rollback", "demo", "--to", "2")
            assert r.returncode == 0 and r.stdout == "host demo now boots generation 2\n"
            script = boot_script(ns)
            [kernel] = [x for x in script.splitlines() if x.startswith("kernel ")]
            assert t2 in kernel and t1 not in script
            assert_golden("cli-desired-forward-nomenu.ipxe", normalised(script, toplevels()))

            assert proc.poll() is None and serve_status()["pid"] == before["pid"]
