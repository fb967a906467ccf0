"""`python -m lab up|down|status`: the appliance on an isolated LAN in network namespaces.

The LAN is a bridge `br-lan` inside the namespace `<name>`; the appliance
runs there with `nixie serve`, and its web listener is forwarded to
https://127.0.0.1:<web-port> on the host (socat), so a browser on this
machine reaches it. Virtual machines that PXE-boot attach their tap devices
to the same bridge. Everything the lab makes is undone by `down` or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance.config.schema import example_config, load_config
from appliance.domain import setupcode, tls_cert
from appliance.nix.command import SINGLE_USER_OFFLINE
from lab import vms as labvm
from lab.netns import Netns, bridge, sh, start_serve, wait_port

LAN_ADDRESS = "10.77.0.1/24"
LAN_IP = LAN_ADDRESS.split("/")[0]


def lab_dir(name: str) -> Path:
    return Path(os.environ.get("NIXIE_LAB_DIR", Path.cwd() / ".lab")) / name


def _pidfile(name: str) -> Path:
    return lab_dir(name) / "lab.pid"


def down(name: str) -> None:
    pidfile = _pidfile(name)
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text())
            if pid != os.getpid():
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
        except (ValueError, ProcessLookupError):
            pass
        pidfile.unlink(missing_ok=True)
    if name in sh("ip", "netns", "list", check=False).stdout.split():
        ns = Netns.__new__(Netns)
        ns.name = name
        ns.close()
    subprocess.run(["pkill", "-f", f"EXEC:ip netns exec {name} "], capture_output=True)


def _fingerprint(cfg_path) -> str:
    """The fingerprint of the certificate serve made (what the browser's dialog shows)."""
    cert = tls_cert.info(load_config(cfg_path))
    return cert.fingerprint if cert else "(not made yet)"


def _setup_code(cfg_path) -> str:
    """The one-time code the setup wizard asks for (serve wrote it at its first start)."""
    path = setupcode.code_path(load_config(cfg_path).state_dir)
    return path.read_text().strip() if path.exists() else "(setup already done)"


def up(name: str, web_port: int, with_vm: bool, install: bool = False) -> int:
    if os.geteuid() != 0:
        print("nixie lab: needs root (network namespaces)", file=sys.stderr)
        return 1
    down(name)
    d = lab_dir(name)
    (d / "state").mkdir(parents=True, exist_ok=True)
    _pidfile(name).write_text(str(os.getpid()))
    cfg = example_config(state_dir=str(d / "state"), interface="br-lan", address=LAN_ADDRESS)
    cfg["nix"] = {"extra_config": SINGLE_USER_OFFLINE}
    cfg["builder"] = {"kind": "local"}
    cfg_path = d / "config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    ns = Netns(name)
    procs: list[subprocess.Popen] = []
    try:
        bridge(ns, "br-lan", LAN_ADDRESS)
        serve = start_serve(ns, cfg_path, d / "serve.log", mode="a", cwd=None)
        procs.append(serve)
        if not wait_port(ns, LAN_IP, 8080, timeout=30):
            print(f"nixie lab: the appliance did not start; see {d / 'serve.log'}", file=sys.stderr)
            return 1
        socat = shutil.which("socat")
        if not socat:
            print("nixie lab: socat is missing (make run installs it)", file=sys.stderr)
            return 1
        fwd = subprocess.Popen(
            [socat, f"TCP-LISTEN:{web_port},bind=127.0.0.1,reuseaddr,fork",
             f"EXEC:ip netns exec {name} {socat} STDIO TCP\\:{LAN_IP}\\:8080"],
            start_new_session=True)
        procs.append(fwd)
        extra = labvm.start(ns, d, cfg_path, procs, install) if with_vm else ""
        print(f"""
Nixie lab is up.
  web UI:    https://127.0.0.1:{web_port}/   (health: https://127.0.0.1:{web_port}/healthz)
             its own certificate, sha256 {_fingerprint(cfg_path)}
  setup code: {_setup_code(cfg_path)}   (the setup wizard asks for it once)
  LAN:       bridge br-lan {LAN_ADDRESS} in network namespace {name}
  config:    {cfg_path}
  logs:      {d / 'serve.log'}
  CLI:       ip netns exec {name} .venv/bin/nixie --config {cfg_path} status
{extra}
Press Ctrl-C to stop and clean up.""", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop and serve.poll() is None:
            time.sleep(0.5)
        if serve.poll() is not None:
            print(f"nixie lab: the appliance exited ({serve.returncode}); see {d / 'serve.log'}",
                  file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        ns.close()
        _pidfile(name).unlink(missing_ok=True)
        print("nixie lab: stopped and cleaned up", flush=True)


def main(args) -> int:
    if args.action == "up":
        return up(args.name, args.web_port, not args.no_vm, args.install)
    if args.action == "down":
        down(args.name)
        return 0
    running = args.name in sh("ip", "netns", "list", check=False).stdout.split()
    print(f"lab {args.name}: {'up' if running else 'down'}")
    return 0
