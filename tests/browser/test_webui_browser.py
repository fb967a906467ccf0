"""The admin UI in the real Chromium against the real `nixie serve` on loopback:
setup wizard, login, a flake evaluated by the real `nix`, a host bound to one of
its configurations, a build followed live, and a screenshot of every page
(test-artifacts/screenshots/)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import ssl
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from appliance.config.schema import example_config
from appliance.domain import tls_cert
from lab.netns import serving
from tests.browser.chromium import SHOTS, launch, shot
from tests.conftest import ROOT, run_nixie
from tests.https import urlopen

PASSWORD = "browser-test-pw-1"
MAC = "52:54:00:7e:57:01"
HAVE_BUILD_WORKER = importlib.util.find_spec("appliance.nix.buildworker") is not None
NIX_TEST_CONFIG = "build-users-group =\nsandbox = false\nsubstituters ="

FLAKE = r"""{
  outputs = { self }: let
    bb = builtins.path { path = ./bbdir; name = "busybox"; };
    toplevel = derivation {
      name = "nixos-system-demo";
      system = "x86_64-linux";
      builder = "${bb}/bin/busybox";
      inherit bb;
      nonce = "@NONCE@";  # a fresh derivation per run, so the build really runs
      args = [ "sh" "-c" ''
        set -e
        echo "building the demo system"
        $bb/bin/busybox mkdir -p $out
        $bb/bin/busybox echo kernel > $out/kernel
        $bb/bin/busybox echo initrd > $out/initrd
        $bb/bin/busybox printf '#!%s/bin/busybox sh\n' $bb > $out/init
        $bb/bin/busybox chmod +x $out/init
        $bb/bin/busybox echo "console=ttyS0" > $out/kernel-params
        echo "done"
      '' ];
    };
  in {
    nixosConfigurations.demo = { config.system.build.toplevel = toplevel; };
  };
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urlopen(url, timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def flake_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("flake")
    (d / "bbdir" / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", d / "bbdir" / "bin" / "busybox")
    (d / "flake.nix").write_text(FLAKE.replace("@NONCE@", uuid.uuid4().hex))
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`nixie serve` on loopback ports of its own, with a fresh state dir."""
    if not shutil.which("nix"):
        pytest.skip("nix is not installed")
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    cfg = example_config(state_dir=str(tmp / "state"), interface="lo", address="127.0.0.1/8")
    cfg["dhcp"].update(mode="off", range=["127.0.0.100", "127.0.0.199"])
    cfg["dns"]["enable"] = False
    cfg["tftp"]["listen"] = [f"127.0.0.1:{free_port()}"]
    cfg["boot"]["http_listen"] = f"127.0.0.1:{free_port()}"
    cfg["web"]["listen"] = [f"127.0.0.1:{port}"]
    cfg["nix"] = {"extra_config": NIX_TEST_CONFIG}
    cfg["builder"] = {"flake_policy": "manual"}  # this test builds by hand
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    base = f"https://127.0.0.1:{port}"  # web.tls is on by default
    with serving(None, path, tmp / "serve.log", group=True,
                 env={**os.environ, "PYTHONPATH": str(ROOT)}) as proc:
        assert wait_http(base + "/healthz"), (tmp / "serve.log").read_text()
        yield {"base": base, "log": tmp / "serve.log", "proc": proc, "tmp": tmp,
               "db": tmp / "state" / "nixie.db"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, server):
    # the appliance's own self-signed certificate: test_https_and_the_certificate_fingerprint
    # compares it by fingerprint instead
    context = browser.new_context(base_url=server["base"], viewport={"width": 1360, "height": 900},
                                  ignore_https_errors=True)
    p = context.new_page()
    p.set_default_timeout(20_000)
    problems: list[str] = []
    p.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: problems.append(str(e)))
    p.problems = problems
    try:
        yield p
    finally:
        context.close()


def setup_code_from_log(log: Path) -> str:
    """The one-time setup code from serve's log (logfmt), which prints it once."""
    codes = re.findall(r"setup_code=([A-Z0-9-]+)", log.read_text())
    assert len(codes) == 1, codes
    return codes[0]


def wait_js(page, expression: str, timeout: float = 20) -> None:
    """Poll a JS expression from here (the page's CSP forbids the eval that
    page.wait_for_function needs)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def test_https_and_the_certificate_fingerprint(page, server):
    """The UI is HTTPS; http:// on the same port lands there; the wizard shows the
    fingerprint of the certificate the browser got, which `nixie status` shows too."""
    port = server["base"].rsplit(":", 1)[1]
    resp = page.goto(f"http://127.0.0.1:{port}/hosts/")
    assert page.url == f"https://127.0.0.1:{port}/setup", page.url
    assert resp.headers["strict-transport-security"].startswith("max-age=")
    served = ssl.get_server_certificate(("127.0.0.1", int(port)))
    want = tls_cert.fingerprint_of_der(ssl.PEM_cert_to_DER_cert(served))
    assert page.inner_text("code.fingerprint").strip() == want
    status = run_nixie("status", "--json", config=server["tmp"] / "config.json")
    assert json.loads(status.stdout)["web"]["certificate"]["sha256"] == want


def test_wizard_then_login(page, server):
    page.goto("/hosts/")
    assert page.url.endswith("/setup")
    shot(page, "01-setup")
    # a wrong answer comes back with the field's error and the input kept
    page.fill("#setup_code", "AAAA-AAAA-AAAA")  # whoever arrives first, without the code
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#lan_interface", "lo")
    page.select_option("#dhcp_mode", "authoritative")
    page.fill("#dhcp_first", "10.1.2.3")
    page.fill("#dhcp_last", "127.0.0.199")
    page.click("button[type=submit]")
    assert "outside the LAN network" in page.inner_text(".has-error")
    assert page.input_value("#dhcp_first") == "10.1.2.3"
    shot(page, "02-setup-error")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#dhcp_first", "127.0.0.100")
    page.click("button[type=submit]")
    assert "setup code is wrong" in page.inner_text(".has-error")
    assert page.url.endswith("/setup")
    # the admin reads the code where serve printed it, once, in its log
    page.fill("#setup_code", setup_code_from_log(server["log"]))
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/\?welcome=1$"))
    assert not (server["tmp"] / "state" / "setup_code").exists()  # used up
    assert "Setup complete" in page.inner_text("main")
    # log out, then in again
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))
    shot(page, "03-login")
    page.fill("#username", "admin")
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text("form")
    assert page.input_value("#username") == "admin"
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dashboard')")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["nixie_session"]["httpOnly"] and cookies["nixie_session"]["sameSite"] == "Lax"


def test_add_flake_evaluated_by_nix(page, flake_dir):
    page.goto("/flakes/")
    page.fill("#url", f"path:{flake_dir}")
    page.click("button:has-text('Add and evaluate')")
    page.wait_for_selector(".flake")
    assert "added; evaluating it" in page.inner_text(".flash")
    # serve's build worker evaluates it with the real nix; the page reloads itself when done
    page.wait_for_selector(".flake[data-eval-state='idle']", timeout=120_000)
    card = page.inner_text(".flake")
    assert f"path:{flake_dir}" in card
    assert "demo" in card and "Last evaluation failed" not in card, card
    shot(page, "04-flakes")
    # refresh with the button: queued, then real nix again
    page.click(".flake button:has-text('Refresh')")
    page.wait_for_selector(".flash-ok:has-text('again')")
    assert f"Evaluating path:{flake_dir} again." in page.inner_text(".flash-ok")
    page.wait_for_selector(".flake[data-eval-state='idle']", timeout=120_000)
    assert "demo" in page.inner_text(".flake table")


def test_bind_host_from_flake(page, flake_dir):
    page.goto("/flakes/")
    page.click("a:has-text('Bind a host')")
    page.wait_for_url(re.compile(r"/hosts/_new"))
    assert page.input_value("#name") == "demo"
    assert page.input_value("#attr") == "nixosConfigurations.demo"
    page.fill("#macs", "not-a-mac")
    page.click("button:has-text('Add host')")
    assert page.locator(".has-error").count() == 1
    assert page.input_value("#macs") == "not-a-mac"
    assert page.input_value("#flake") == f"path:{flake_dir}"
    shot(page, "05-host-form-error")
    page.fill("#macs", MAC)
    page.click("button:has-text('Add host')")
    page.wait_for_url(re.compile(r"/hosts/demo$"))
    assert MAC in page.inner_text("main")
    assert "host.added" in page.inner_text(".timeline")
    # Wake-on-LAN (out on loopback, the test config's LAN interface)
    page.click("button:has-text('Wake-on-LAN')")
    page.wait_for_selector(".flash-ok")
    assert MAC in page.inner_text(".flash-ok")
    assert "host.wol" in page.inner_text(".timeline")
    shot(page, "06-host")
    page.click("a:has-text('Edit')")
    page.select_option("#mode", "install")
    page.click("button:has-text('Save')")
    page.wait_for_url(re.compile(r"/hosts/demo$"))
    assert "install" in page.inner_text(".props")


def test_every_page(page, server):
    page.goto("/")
    assert page.locator(".stat").count() >= 6
    assert "demo" in page.inner_text(".host-tiles")
    shot(page, "07-dashboard")
    page.goto("/hosts/")
    assert "demo" in page.inner_text("#hosts-table")
    shot(page, "08-hosts")
    page.fill(".toolbar input[name=q]", "7e:57")
    page.click(".toolbar button:has-text('Search')")
    assert page.locator("#hosts-table tbody tr").count() == 1
    page.goto("/hosts/demo/edit")
    shot(page, "09-host-edit")
    with page.expect_download() as dl:
        page.goto("/hosts/")
        page.click("a:has-text('Export hosts.json')")
    exported = json.loads(Path(dl.value.path()).read_text())
    assert exported["demo"]["mac_address"] == MAC
    for view in ("active", "all", "reservations"):
        page.goto(f"/leases/?view={view}")
        page.wait_for_selector("h1:has-text('Leases')")
        shot(page, f"10-leases-{view}")
    assert "demo" in page.inner_text("main")  # reservations list the bound host
    page.goto("/network/")
    assert "lo" in page.inner_text("#interfaces-table")
    assert "LAN" in page.inner_text("#interfaces-table")
    shot(page, "11-network")
    page.goto("/settings/")
    page.fill("#builder_substituters", "https://cache.example.org")
    page.fill("#dhcp_lease_seconds", "10")
    page.click("button:has-text('Save settings')")
    assert page.locator(".has-error").count() == 1
    assert page.input_value("#builder_substituters") == "https://cache.example.org"
    page.fill("#dhcp_lease_seconds", "7200")
    page.click("button:has-text('Save settings')")
    page.wait_for_selector(".flash-ok")
    assert page.input_value("#dhcp_lease_seconds") == "7200"
    shot(page, "12-settings")
    page.goto("/events/?kind=host.*")
    assert "host.added" in page.inner_text("#events-table")
    shot(page, "13-events")
    page.goto("/tokens/")
    page.fill("#name", "ci")
    page.click("button:has-text('Create token')")
    secret = page.inner_text("#new-token").strip()
    assert secret.startswith("nxt_")
    shot(page, "14-tokens")
    # the token works against the API of the same server
    req = urllib.request.Request(server["base"] + "/api/v1/hosts/demo",
                                 headers={"Authorization": f"Bearer {secret}"})
    assert json.loads(urlopen(req, timeout=5).read())["macs"] == [MAC]
    resp = page.goto("/hosts/no-such-host")
    assert resp.status == 404 and "no host named" in page.inner_text("main")
    shot(page, "14b-not-found")
    # narrow screen: the layout folds its menu
    page.set_viewport_size({"width": 420, "height": 900})
    page.goto("/")
    assert not page.is_visible("#sidebar a:has-text('Hosts')")
    page.click(".nav-toggle")
    page.wait_for_selector("#sidebar.open")
    shot(page, "15-dashboard-mobile")
    page.set_viewport_size({"width": 1360, "height": 900})
    assert not [m for m in page.problems if "Content Security Policy" in m or "Refused" in m], \
        page.problems


def test_build_page_follows_the_columns_the_worker_writes(page, server):
    """The build page's live log and progress bar, driven through the contract with the
    build worker (issue 5): it appends `builds.log_path` and updates `status`,
    `progress`, `toplevel`. The row is inserted as already running, so a real worker
    (when merged) leaves it alone."""
    from appliance.state.db import connect, now

    conn = connect(server["db"], migrate=False)
    log = server["tmp"] / "contract-build.log"
    log.write_text("")
    host_id = conn.execute("SELECT id FROM hosts WHERE name = 'demo'").fetchone()[0]
    build_id = conn.execute(
        "INSERT INTO builds (host_id, host_name, flake, attr, status, log_path, progress, queued_at, "
        "started_at) VALUES (?, 'demo', 'path:/x', 'nixosConfigurations.demo', 'running', ?, ?, ?, ?)",
        (host_id, str(log), json.dumps({"builds_done": 0, "builds_expected": 4, "phase": "unpackPhase"}),
         now(), now())).lastrowid
    try:
        page.goto(f"/builds/{build_id}")
        page.wait_for_selector("#build-status[data-status=running]")
        with open(log, "a") as f:
            f.write("these derivations will be built:\n  /nix/store/abc-demo.drv\n")
        wait_js(page, "document.getElementById('build-log').textContent.includes('abc-demo.drv')")
        conn.execute("UPDATE builds SET progress = ? WHERE id = ?",
                     (json.dumps({"builds_done": 2, "builds_expected": 4, "phase": "buildPhase"}), build_id))
        wait_js(page, "document.getElementById('build-progress').value === 50")
        assert "buildPhase" in page.inner_text("#build-progress-text")
        with open(log, "a") as f:
            f.write("ünïcode line\n" + "x" * 300_000 + "\nthe end\n")  # more than one poll's chunk
        conn.execute("UPDATE builds SET status = 'succeeded', toplevel = '/nix/store/abc-demo', "
                     "finished_at = ?, progress = ? WHERE id = ?",
                     (now(), json.dumps({"builds_done": 4, "builds_expected": 4}), build_id))
        wait_js(page, "document.getElementById('log-state').textContent.includes('succeeded')")
        text = page.inner_text("#build-log")
        assert "ünïcode line" in text and text.rstrip().endswith("the end")
        assert page.get_attribute("#build-status", "data-status") == "succeeded"
        assert page.inner_text("#build-toplevel") == "/nix/store/abc-demo"
        assert page.evaluate("document.getElementById('build-progress').value") == 100
        shot(page, "16-build-log-followed")
    finally:
        conn.close()


def test_build_and_follow_its_log(page, server, flake_dir):
    page.goto("/hosts/demo")
    page.click("button:has-text('Build now')")
    page.wait_for_url(re.compile(r"/builds/\d+$"))
    assert page.locator("#build-log").count() == 1
    page.wait_for_selector("#build-status[data-status]")
    shot(page, "17-build-queued")
    page.goto("/builds/")
    assert "demo" in page.inner_text("#builds-table")
    shot(page, "18-builds")
    page.go_back()
    if not HAVE_BUILD_WORKER:
        # this branch has no build worker (issue 5 builds it): the build stays queued
        status = page.get_attribute("#build-status", "data-status")
        assert status == "queued"
        pytest.xfail("appliance.nix.buildworker is not on this branch: the build stays queued; "
                     "at merge this test must pass with the worker (status succeeded, log followed)")
    wait_js(page, "['succeeded', 'failed'].includes(document.getElementById('build-status').dataset.status)",
            timeout=180)
    assert page.get_attribute("#build-status", "data-status") == "succeeded", page.inner_text("main")
    wait_js(page, "document.getElementById('log-state').textContent.includes('finished')")
    log = page.inner_text("#build-log")
    assert "building the demo system" in log, log
    assert page.get_attribute("#build-progress", "value") == "100"
    assert "/nix/store/" in page.inner_text("#build-toplevel")
    shot(page, "19-build-succeeded")
    # the success is a generation of the host; a second build makes another, and the
    # generation picker rolls the host back to the first
    page.goto("/hosts/demo")
    assert page.locator("#number option").count() == 1
    flake = flake_dir / "flake.nix"  # a changed system, so a new generation
    flake.write_text(re.sub(r'nonce = "[0-9a-f]+"', f'nonce = "{uuid.uuid4().hex}"', flake.read_text()))
    page.click("button:has-text('Build now')")
    page.wait_for_url(re.compile(r"/builds/\d+$"))
    wait_js(page, "document.getElementById('build-status').dataset.status === 'succeeded'", timeout=180)
    page.goto("/hosts/demo")
    options = page.locator("#number option").all_inner_texts()
    assert len(options) == 2, options
    page.select_option("#number", label=options[-1])
    page.click("button:has-text('Set as default')")
    page.wait_for_selector(".flash-ok")
    assert "now boots generation" in page.inner_text(".flash-ok")
    assert "current" in page.inner_text("tr.current")
    assert page.locator("tr.current td").first.inner_text().startswith(options[-1].lstrip("#"))
    shot(page, "20-host-rolled-back")


# ------------------------------------------------------------------ boots on the dashboard

BROKEN_MAC = "52:54:00:7e:57:02"


def _http(url: str, data: bytes | None = None, headers: dict | None = None
          ) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def boot_over_http(boot_base: str, mac: str) -> dict:
    """What iPXE and the agent do, over the real HTTP boot server (no VM): the host's
    script, its kernel and initrd, then `booted` with the token from the kernel line.
    Stops at the first file that is not there. Returns what each step answered."""
    status, script = _http(f"{boot_base}/boot/{mac}.ipxe")
    assert status == 200, script
    text = script.decode()
    kernel = re.search(r"^kernel (\S+) .*nixie\.token=(\S+)", text, re.M)
    initrd = re.search(r"^initrd --name initrd (\S+)", text, re.M)
    assert kernel and initrd, text
    here = lambda url: boot_base + "/" + url.split("/", 3)[3]  # noqa: E731 - from this host
    out = {"kernel": _http(here(kernel.group(1)))[0]}
    if out["kernel"] != 200:
        return out
    deadline = time.monotonic() + 120
    while (code := _http(here(initrd.group(1)))[0]) == 503 and time.monotonic() < deadline:
        time.sleep(1)  # the initrd is being made
    out["initrd"] = code
    # an install boot (the host's mode) reports installing, then installed
    reports = ["installing", "installed"] if "nixie.mode=install" in kernel.string[kernel.start():].split("\n")[0] \
        else ["booted"]
    for event in reports:
        code, body = _http(f"{boot_base}/api/v1/agent/events",
                           json.dumps({"event": event, "message": "up"}).encode(),
                           {"Authorization": f"Bearer {kernel.group(2)}",
                            "Content-Type": "application/json"})
        assert code == 200, (event, code, body)
    out["agent"] = code
    return out


def test_dashboard_charts_and_where_a_boot_stopped(page, server, flake_dir, tmp_path):
    """After a boot over HTTP and a boot whose generation has no kernel (its `kernel` a
    dangling link, built by the real nix): the dashboard's charts have their bars, and
    the broken host's timeline says where its boot stopped, with the hint."""
    if not HAVE_BUILD_WORKER:
        pytest.skip("no build worker on this branch: no generation to boot")
    cfg_path = server["tmp"] / "config.json"
    boot_base = "http://" + json.loads(cfg_path.read_text())["boot"]["http_listen"]
    broken = tmp_path / "broken"
    shutil.copytree(flake_dir, broken)
    flake = (broken / "flake.nix").read_text()
    (broken / "flake.nix").write_text(flake.replace(
        "$bb/bin/busybox echo kernel > $out/kernel",
        "$bb/bin/busybox ln -s /nix/store/00000000000000000000000000000000-gone/bzImage "
        "$out/kernel"))
    assert run_nixie("flake", "add", str(broken), config=cfg_path).returncode == 0
    r = run_nixie("host", "add", "broken", "--mac", BROKEN_MAC, "--flake", str(broken),
                  "--attr", "nixosConfigurations.demo", config=cfg_path)
    assert r.returncode == 0, r.stderr
    r = run_nixie("build", "broken", "--wait", "--timeout", "180", "--json", config=cfg_path,
                  timeout=200)
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "succeeded", r.stdout + r.stderr

    assert boot_over_http(boot_base, MAC) == {"kernel": 200, "initrd": 200, "agent": 200}
    assert boot_over_http(boot_base, BROKEN_MAC) == {"kernel": 404}

    page.goto("/")
    page.wait_for_selector("#charts")
    per_hour = page.locator("#chart-boots-per-hour rect[data-value]")
    assert sum(float(v) for v in per_hour.evaluate_all(
        "rs => rs.map(r => r.dataset.value)")) >= 2
    durations = page.locator("#chart-boot-durations rect[data-value]")
    classes = durations.evaluate_all("rs => rs.map(r => r.getAttribute('class'))")
    assert "bar-ok" in classes and "bar-bad" in classes, classes
    assert page.locator("#chart-build-durations rect[data-value]").count() >= 3
    box = page.locator("#chart-boot-durations svg").bounding_box()
    assert box and box["width"] > 200 and box["height"] > 50  # drawn, not collapsed
    shot(page, "21-dashboard-charts")
    print(f"dashboard with charts: {SHOTS / '21-dashboard-charts.png'}")

    page.goto("/hosts/broken")
    stopped = page.locator("#boots li.boot[data-outcome='stopped']").first
    assert stopped.locator(".step-error[data-step='kernel']").count() == 1
    hint = stopped.locator(".hint").inner_text()
    assert "Stopped at kernel: the kernel is missing" in hint, hint
    assert "troubleshooting" in hint and "Kernel and initrd" in hint
    shot(page, "22-host-boot-stopped")
    print(f"host timeline with the hint: {SHOTS / '22-host-boot-stopped.png'}")
    page.goto("/hosts/demo")  # in install mode since test_bind_host_from_flake
    done = page.locator("#boots li.boot[data-outcome='installed']").first
    assert done.locator(".step").evaluate_all("ss => ss.map(s => s.dataset.step)") == [
        "script", "kernel", "initrd", "installing", "installed"]
    assert "power-on to installed" in done.inner_text()
