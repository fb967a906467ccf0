"""Rollback, as a PXE-booting machine sees it.

`nixie serve` in a namespace with its LAN bridge builds the lab flake twice for
one host with the real `nix` (generation 1, then generation 2 after changing
release.txt, which changes exactly the toplevel). A BIOS VM PXE-boots: the
kernel command line on its console names generation 2's toplevel (`init=`),
and the running stage 2 reports `booted` with its own path. The admin then logs
in through the web UI's login form (session cookie, CSRF token, like a browser)
and submits the host page's "Set as default" form for generation 1. The VM is
power-cycled and boots generation 1; the boot script served over HTTP still
lists generation 2, with generation 1 marked "(current)" as the menu's default.

The appliance is set up here rather than shared with test_e2e_boot.py: that
test's fixture is per test and boots two other machines; this one needs a host
with two generations, and its set-up (serve, flake, two builds: ~4 s here) costs
little next to its two boots (~23 s each under TCG). The menu timeout is 1 s (appliance_serving), so the menu is
served and each boot waits one second in it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from lab import flake as labflake
from lab.qemu import PxeVM
from tests.conftest import run_nixie
from tests.netns.serve_lab import http_get
from tests.vm.pxe_lab import add_and_build

HOST, MAC = "demo", "52:54:00:4e:58:21"
ADMIN, PASSWORD = "ops", "rollback-test-pw-1"
BOOT_TIMEOUT = 300  # one TCG guest; a boot takes ~25 s when the machine is quiet
# what the console shows when a boot ends, well or badly
BOOT_ENDS = ("NIXIE-REPORTED", "NIXIE-REPORT-FAILED", "Kernel panic", "stage 1: no usable init=")

# A minimal browser for server-rendered forms, run inside the namespace: one
# requests.Session (cookies kept), pages fetched with GET, forms submitted the way
# a browser submits them: every field the form holds (the hidden CSRF token too)
# with its value as rendered, except the fields the user changed; a <select> takes
# only one of its options. Steps on stdin as JSON:
#   {"get": "/path"}  or  {"submit": "<button text>", "fields": {"name": "value"}}
# (the form is the one on the previous page with that button). Prints, per step,
# {"status", "url", "text", "submitted"} as JSON.
FORM_BROWSER = r'''
import html.parser, json, sys, urllib.parse
import requests

class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self.form, self.select, self.button = [], None, None, None
    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.form = {"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                         "fields": {}, "options": {}, "buttons": []}
            self.forms.append(self.form)
        elif self.form is None:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind not in ("checkbox", "radio") or "checked" in a:
                self.form["fields"][a["name"]] = a.get("value", "")
        elif tag == "select" and a.get("name"):
            self.select = a["name"]
            self.form["options"][self.select] = []
        elif tag == "option" and self.select:
            self.form["options"][self.select].append(a.get("value", ""))
            if "selected" in a or self.select not in self.form["fields"]:
                self.form["fields"][self.select] = a.get("value", "")
        elif tag == "button":
            self.button = ""
    def handle_data(self, data):
        if self.button is not None:
            self.button += data
    def handle_endtag(self, tag):
        if tag == "form":
            self.form = None
        elif tag == "select":
            self.select = None
        elif tag == "button" and self.button is not None:
            if self.form is not None:
                self.form["buttons"].append(self.button.strip())
            self.button = None

base = sys.argv[1]
session = requests.Session()
page, out = None, []
for step in json.load(sys.stdin):
    submitted = []
    if "get" in step:
        page = session.get(base + step["get"], timeout=10)
    else:
        parser = Forms()
        parser.feed(page.text)
        forms = [f for f in parser.forms if step["submit"] in f["buttons"]]
        if len(forms) != 1:
            sys.exit(f"{len(forms)} forms with a {step['submit']!r} button on {page.url}")
        form = forms[0]
        data = dict(form["fields"])
        for name, value in step.get("fields", {}).items():
            if name not in data:
                sys.exit(f"the {step['submit']!r} form has no field {name!r}: {sorted(data)}")
            if name in form["options"] and value not in form["options"][name]:
                sys.exit(f"{value!r} is not an option of {name!r}: {form['options'][name]}")
            data[name] = value
        submitted = sorted(data)
        url = urllib.parse.urljoin(page.url, form["action"])
        page = session.request(form["method"].upper(), url, data=data, timeout=10)
    out.append({"status": page.status_code, "url": page.url, "text": page.text,
                "submitted": submitted})
print(json.dumps(out))
'''


def browse(ns, base: str, steps: list[dict]) -> list[dict]:
    """Run FORM_BROWSER's `steps` against `base` inside `ns`; one page per step."""
    r = subprocess.run(ns.argv(sys.executable, "-c", FORM_BROWSER, base), input=json.dumps(steps),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def build(cfg_path: Path, name: str) -> dict:
    r = run_nixie("build", name, "--wait", "--timeout", "300", "--json", config=cfg_path,
                  timeout=320)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["status"] == "succeeded", result
    return result


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
    ns, cfg_path, cfg, tmp = appliance
    t0 = time.monotonic()
    flake = labflake.materialise(tmp / "flake", release=f"rollback gen 1 {uuid.uuid4()}")
    add_and_build(cfg_path, flake, {HOST: MAC})
    labflake.set_release(flake, f"rollback gen 2 {uuid.uuid4()}")
    build(cfg_path, HOST)
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

        # the admin picks generation 1 in the web UI, as a browser would
        web = f"http://{cfg['web']['listen'][0]}"
        pages = browse(ns, web, [
            {"get": "/login"},
            {"submit": "Log in", "fields": {"username": ADMIN, "password": PASSWORD}},
            {"get": f"/hosts/{HOST}"},
            {"submit": "Set as default", "fields": {"number": "1"}},
        ])
        login, logged_in, host_page, after = pages
        assert login["status"] == 200 and "csrf_token" in logged_in["submitted"]
        assert logged_in["status"] == 200 and "/login" not in logged_in["url"], logged_in["url"]
        assert host_page["status"] == 200 and host_page["url"] == f"{web}/hosts/{HOST}"
        assert after["submitted"] == ["csrf_token", "number"]
        assert after["status"] == 200 and after["url"] == f"{web}/hosts/{HOST}", after["url"]
        assert f"host {HOST} now boots generation 1 by default." in after["text"], after["text"][-3000:]
        current_rows = re.findall(r'<tr class="current" id="generation-(\d+)">', after["text"])
        assert current_rows == ["1"], current_rows

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
