"""Issue 18, end to end: builds follow the flake, and an unknown machine is adopted in the UI.

`nixie serve` (on_change flakes; no scheduled revision check, so what moves it is the
webhook) in a namespace with its LAN bridge. The lab flake (a git repository in a temp
dir) declares demo and demo2 with their MACs:
1. added with `nixie flake add`: both hosts appear, bound from the flake, and build by
   themselves (one build each, generation 1);
2. a commit changes only demo2's system; a webhook with a wrong signature is refused (401),
   the right one (GitHub's X-Hub-Signature-256) is accepted: demo2 builds generation 2,
   demo keeps generation 1 and its one build, and the boot scripts served over HTTP name
   exactly those systems;
3. a BIOS VM with a MAC no host has PXE-boots: it is listed under "Machines waiting"; the
   admin, in the real Chromium, adds it as a host of demo2; powered on again, it boots
   demo2's new system and reports `booted` from it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

from lab import flake as labflake
from lab.qemu import PxeVM
from tests.browser.chromium import chromium_page, shot
from tests.conftest import run_nixie
from tests.netns.serve_lab import http_get
from tests.tiers import browser_reason
from tests.vm.pxe_lab import appliance_serving

DECLARED = {"demo": "52:54:00:5e:00:01", "demo2": "52:54:00:5e:00:02"}  # examples/lab-flake
UNKNOWN_MAC = "52:54:00:4e:58:31"
ADMIN, PASSWORD = "ops", "follow-flake-pw-1"
BUILD_TIMEOUT = 420
BOOT_TIMEOUT = 300
BOOT_ENDS = ("NIXIE-REPORTED", "NIXIE-REPORT-FAILED", "Kernel panic", "stage 1: no usable init=")


def nixie_json(cfg_path: Path, *args: str):
    r = run_nixie(*args, "--json", config=cfg_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def wait_until(what: str, check, timeout: float, cfg_path: Path):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            builds = nixie_json(cfg_path, "builds")
            pytest.fail(f"{what}: not within {timeout} s; builds: "
                        + json.dumps([(b["host_name"], b["status"], b.get("error")) for b in builds]))
        time.sleep(2)


def hosts_of(cfg_path: Path) -> dict[str, dict]:
    return {h["name"]: h for h in nixie_json(cfg_path, "host", "list")}


def generations(cfg_path: Path, name: str) -> dict[int, str]:
    h = nixie_json(cfg_path, "host", "show", name)
    return {g["number"]: g["toplevel"] for g in h["generations"]}


def builds_of(cfg_path: Path, name: str) -> list[dict]:
    return [b for b in nixie_json(cfg_path, "builds") if b["host_name"] == name]


POST = ("import sys, ssl, urllib.request, json\n"
        "req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method='POST',\n"
        "    headers=json.loads(sys.argv[3]))\n"
        "try:\n r = urllib.request.urlopen(req, timeout=10, context=ssl._create_unverified_context()); print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())\n")


def log_in(page) -> None:
    page.goto("/login")
    page.fill("#username", ADMIN)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("button:has-text('Log in')")


def post_hook(ns, url: str, body: str, headers: dict[str, str]) -> tuple[int, str]:
    r = ns.run(sys.executable, "-c", POST, url, body, json.dumps(headers))
    status, _, text = r.stdout.partition("\n")
    return int(status), text


def change_demo2_only(flake: Path) -> None:
    """A commit that changes demo2's system (its kernel parameters) and nothing of demo's."""
    p = flake / "flake.nix"
    text = p.read_text()
    assert text.count('hostName = "demo2";') == 1
    p.write_text(text.replace('hostName = "demo2";', 'hostName = "demo2";\n          '
                              'kernelParams = [ "console=ttyS0" "panic=-1" "nixie.rev=2" ];'))
    labflake.commit(flake, "demo2: a kernel parameter")


def test_builds_follow_the_flake_and_an_unknown_vm_is_adopted_in_the_ui(tmp_path):
    if reason := browser_reason():
        pytest.skip(f"the admin's browser: {reason}")
    flake = labflake.materialise(tmp_path / "flake", release=f"follow {uuid.uuid4()}")
    with appliance_serving(tmp_path, builder={"flake_policy": "on_change",
                                              "flake_check_seconds": 0}) as (ns, cfg_path, cfg):
        web = f"https://{cfg['web']['listen'][0]}"  # the admin UI's own certificate
        boot = f"http://{cfg['boot']['http_listen']}"
        # 1. add the flake in the web UI: its declared hosts are bound and built by themselves
        r = run_nixie("admin", "create-user", ADMIN, "--password-stdin", config=cfg_path,
                      input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        with chromium_page(web, ns, tmp_path) as page:
            log_in(page)
            page.goto("/flakes/")
            page.fill("#url", str(flake))
            page.click("button:has-text('Add and evaluate')")
            page.wait_for_selector(".flake[data-eval-state='idle']", timeout=BUILD_TIMEOUT * 1000)
        (f,) = nixie_json(cfg_path, "flake", "list")  # the one the browser added
        assert f["build_policy"] == "on_change" and f["configurations"] == ["demo", "demo2"]
        hosts = wait_until("declared hosts built", lambda: (
            h if set(h := hosts_of(cfg_path)) == set(DECLARED)
            and all(x["current_generation"] == 1 for x in h.values()) else None),
            BUILD_TIMEOUT, cfg_path)
        for name, mac in DECLARED.items():
            assert hosts[name]["macs"] == [mac] and hosts[name]["source"] == "flake"
            assert len(builds_of(cfg_path, name)) == 1
        first = {name: generations(cfg_path, name)[1] for name in DECLARED}

        # 2. a commit that changes demo2 only, announced by the forge's webhook
        hook = nixie_json(cfg_path, "flake", "hook-secret", str(flake))
        change_demo2_only(flake)
        body = json.dumps({"ref": "refs/heads/main", "after": "c0ffee"})
        sig = "sha256=" + hmac.new(hook["secret"].encode(), body.encode(), hashlib.sha256).hexdigest()
        status, text = post_hook(ns, web + hook["path"], body,
                                 {"X-Hub-Signature-256": "sha256=" + "0" * 64,
                                  "Content-Type": "application/json"})
        assert status == 401, text
        status, text = post_hook(ns, web + hook["path"], body,
                                 {"X-Hub-Signature-256": sig, "Content-Type": "application/json"})
        assert status == 202 and json.loads(text)["result"] in ("queued", "pending"), text
        wait_until("demo2 rebuilt", lambda: hosts_of(cfg_path)["demo2"]["current_generation"] == 2,
                   BUILD_TIMEOUT, cfg_path)
        gens2 = generations(cfg_path, "demo2")
        assert gens2[1] == first["demo2"] and gens2[2] != first["demo2"]
        assert generations(cfg_path, "demo") == {1: first["demo"]}
        assert len(builds_of(cfg_path, "demo")) == 1 and len(builds_of(cfg_path, "demo2")) == 2
        for name, top in (("demo", first["demo"]), ("demo2", gens2[2])):
            status, script = http_get(ns, f"{boot}/boot/{DECLARED[name]}.ipxe")
            assert status == 200, script
            default = re.search(r"--default (\w+)", script).group(1)
            assert re.search(rf"^:{default}\n.*\nkernel \S+ initrd=initrd init={re.escape(top)}/init ",
                             script, re.M), script

        # 3. an unknown machine PXE-boots and waits
        vm = PxeVM(ns, "br-lan", "bios", UNKNOWN_MAC, tmp_path / "vms")
        try:
            vm.start()
            wait_until("the unknown VM listed as waiting", lambda: UNKNOWN_MAC in [
                m["mac"] for m in nixie_json(cfg_path, "host", "waiting")], BOOT_TIMEOUT, cfg_path)
            vm.stop()
            with chromium_page(web, ns, tmp_path) as page:
                log_in(page)
                assert UNKNOWN_MAC in page.inner_text("#machines-waiting")
                page.goto("/machines/")
                row = page.locator(f"tr.machine[data-mac='{UNKNOWN_MAC}']")
                assert "bios" in row.inner_text()
                shot(page, "18-machines-waiting")
                row.locator("select").select_option(label=f"demo2 ({f['url']})")
                row.locator("input[name$='-name']").fill("adoptee")
                with page.expect_navigation():
                    row.locator("button:has-text('Add as host')").click()
                assert page.url == f"{web}/hosts/adoptee", page.url
                assert "adopted from Machines waiting" in page.inner_text("main")
                page.goto("/flakes/")
                hosts_cell = page.inner_text("tr[data-configuration='demo2']")
                assert "from the flake" in hosts_cell and "adopted" in hosts_cell
            # its next boot: demo2's new system
            vm.start()
            end = vm.wait_for(*BOOT_ENDS, timeout=BOOT_TIMEOUT)
            console = vm.console()
        finally:
            vm.stop()
        assert end == "NIXIE-REPORTED", console[-3000:]
        h = nixie_json(cfg_path, "host", "show", "adoptee")
        assert h["state"] == "booted" and h["source"] == "adopted"
        adopted_top = generations(cfg_path, "adoptee")[h["current_generation"]]
        assert adopted_top == gens2[2]
        assert f"init={gens2[2]}/init" in console and "nixie.rev=2" in console
        reports = [e["message"] for e in h["events"] if e["kind"] == "host.booted"]
        assert reports == [f"demo2 reached stage 2 of {gens2[2]}"], reports
