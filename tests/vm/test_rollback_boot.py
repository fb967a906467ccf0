"""Rollback, as a PXE-booting machine sees it.

`nixie serve` in a namespace with its LAN bridge builds the lab flake twice for
one host with the real `nix` (generation 1, then generation 2 after changing
release.txt, which changes exactly the toplevel). A BIOS VM PXE-boots: the
kernel command line on its console names generation 2's toplevel (`init=`),
and the running stage 2 reports `booted` with its own path. The admin then logs
in to the web UI in the real Chromium and submits the host page's "Set as
default" form for generation 1. The VM is power-cycled and boots generation 1;
the boot script served over HTTP still lists generation 2, with generation 1
marked "(current)" as the menu's default.

The host and its two generations are made here rather than shared with
test_e2e_boot.py (which boots two other machines on the same `appliance`
fixture): the set-up (flake, two builds) costs little next to two boots under
TCG. The menu timeout is 1 s (appliance_serving), so the menu is served and
each boot waits one second in it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from lab import flake as labflake
from lab.qemu import PxeVM
from tests.browser.chromium import chromium_page
from tests.conftest import run_nixie
from tests.netns.serve_lab import http_get
from tests.tiers import browser_reason
from tests.vm.pxe_lab import add_and_build, build

HOST, MAC = "demo", "52:54:00:4e:58:21"
ADMIN, PASSWORD = "ops", "rollback-test-pw-1"
BOOT_TIMEOUT = 300  # one TCG guest; a boot takes ~25 s when the machine is quiet
# what the console shows when a boot ends, well or badly
BOOT_ENDS = ("NIXIE-REPORTED", "NIXIE-REPORT-FAILED", "Kernel panic", "stage 1: no usable init=")

def host_show(cfg_path: Path, name: str) -> dict:
    return json.loads(run_nixie("host", "show", name, "--json", config=cfg_path).stdout)


def booted_reports(cfg_path: Path, name: str) -> list[str]:
    """What the host's stage 2 said in each `booted` report, newest first."""
    r = run_nixie("events", "--host", name, "--kind", "host.booted", "--json", config=cfg_path)
    return [e["message"] for e in json.loads(r.stdout)]


def boot(vm: PxeVM, cfg_path: Path) -> str:
    """Power the VM on, wait for its boot to end, power it off; returns its console."""
    vm.start()
    try:
        end = vm.wait_for(*BOOT_ENDS, timeout=BOOT_TIMEOUT)
        console = vm.console()
    finally:
        vm.stop()
    assert end == "NIXIE-REPORTED", (
        f"boot ended with {end!r}\n{console[-3000:]}\nevents: "
        + json.dumps([(e["kind"], e["message"]) for e in host_show(cfg_path, HOST)["events"][:15]]))
    return console


def assert_booted_generation(console: str, gens: dict[int, str], number: int) -> None:
    """The kernel command line the console shows has `init=` in generation `number`."""
    lines = re.findall(r"Command line: (.*)", console)
    assert lines, f"no kernel command line on the console:\n{console[-3000:]}"
    inits = re.findall(r"(?:^| )init=(\S+)", lines[0])
    booted = {f"{t}/init": n for n, t in gens.items()}
    assert inits == [f"{gens[number]}/init"], (
        f"expected generation {number}; the kernel got init={inits} "
        f"(generation {[booted.get(i) for i in inits]})\n{lines[0]}")


def menu_items(script: str) -> list[tuple[str, str]]:
    """The menu's generation entries as (item id, text), in order."""
    return re.findall(r"^item --key \d+ (gen\d+) \[\d+\] (.*)$", script, re.M)


def test_set_as_default_in_the_web_ui_rolls_a_netbooting_vm_back(appliance):
    if reason := browser_reason():
        pytest.skip(f"the admin's browser: {reason}")
    ns, cfg_path, cfg, tmp = appliance
    t0 = time.monotonic()
    flake = labflake.materialise(tmp / "flake", release=f"rollback gen 1 {uuid.uuid4()}")
    add_and_build(cfg_path, flake, {HOST: MAC})
    labflake.set_release(flake, f"rollback gen 2 {uuid.uuid4()}")
    second = build(cfg_path, HOST)
    assert second["status"] == "succeeded", second
    h = host_show(cfg_path, HOST)
    gens = {g["number"]: g["toplevel"] for g in h["generations"]}
    assert sorted(gens) == [1, 2] and gens[1] != gens[2], h["generations"]
    assert h["current_generation"] == 2
    r = run_nixie("admin", "create-user", ADMIN, "--password-stdin", config=cfg_path,
                  input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    print(f"set-up (serve, two builds): {time.monotonic() - t0:.1f} s")

    vm = PxeVM(ns, "br-lan", "bios", MAC, tmp / "vms")
    try:
        # boot 1: the newest generation
        t1 = time.monotonic()
        console = boot(vm, cfg_path)
        print(f"boot 1: {time.monotonic() - t1:.1f} s")
        assert_booted_generation(console, gens, 2)
        assert "NIXIE-STAGE2 demo" in console
        assert host_show(cfg_path, HOST)["state"] == "booted"
        # its stage 2 says which system it runs: the directory of its own init
        booted = booted_reports(cfg_path, HOST)
        assert booted == [f"demo reached stage 2 of {gens[2]}"], booted

        # the admin picks generation 1 in the web UI, in the real Chromium
        web = f"https://{cfg['web']['listen'][0]}"  # web.tls: the appliance's own certificate
        with chromium_page(web, ns, tmp) as page:
            assert page.goto("/login").status == 200
            page.fill("#username", ADMIN)
            page.fill("#password", PASSWORD)
            with page.expect_navigation():
                page.click("button:has-text('Log in')")
            assert "/login" not in page.url, page.url
            assert page.goto(f"/hosts/{HOST}").status == 200 and page.url == f"{web}/hosts/{HOST}"
            page.select_option("#number", "1")
            with page.expect_navigation():
                page.click("button:has-text('Set as default')")
            assert page.url == f"{web}/hosts/{HOST}", page.url
            flashes = page.locator(".flash").all_inner_texts()
            assert f"host {HOST} now boots generation 1 by default." in flashes, flashes
            current_rows = page.eval_on_selector_all("tr.current", "rows => rows.map(r => r.id)")
            assert current_rows == ["generation-1"], current_rows

        # boot 2 (power-cycled): generation 1
        t2 = time.monotonic()
        console = boot(vm, cfg_path)
        print(f"boot 2: {time.monotonic() - t2:.1f} s")
        assert_booted_generation(console, gens, 1)
        booted = booted_reports(cfg_path, HOST)
        assert booted == [f"demo reached stage 2 of {gens[1]}",
                          f"demo reached stage 2 of {gens[2]}"], booted
    finally:
        vm.stop()

    # the boot script still offers generation 2; generation 1 is the default
    status, script = http_get(ns, f"http://{cfg['boot']['http_listen']}/boot/{MAC}.ipxe")
    assert status == 200, script
    items = menu_items(script)
    assert [(i, re.sub(r" \(\d{4}-\d\d-\d\d \d\d:\d\d\)", "", text)) for i, text in items] == [
        ("gen0", "generation 2"), ("gen1", "generation 1 (current)")], script
    assert re.search(r"^choose --timeout 1000 --default gen1 selected \|\| goto gen1$", script,
                     re.M), script
    kernels = dict(re.findall(r"^:(gen\d)\n.*\nkernel \S+ initrd=initrd init=(\S+)/init ", script,
                              re.M))
    assert kernels == {"gen0": gens[2], "gen1": gens[1]}, script
