"""A file-backed implementation of the netservices boot backend, for tests and benches.

Not a mock: it serves real bytes from plain files described by a JSON spec,
issues real tokens and records events to a JSON-lines file, so the HTTP boot
server runs exactly as it does over the appliance's backend.

Spec:
  {"hosts": [{"name": "n1", "id": 1, "macs": ["52:54:00:..."], "mode": "netboot",
              "targets": ["<basename>", ...]}],          # newest first
   "systems": {"<basename>": {"label": "...", "kernel": "/path",
                              "initrd": ["/part1", "/part2"],  # concatenated segments
                              "params": ["console=ttyS0"]}},
   "dispatch": {"profile/NAME": "<basename>", ...},
   "pending": ["profile/building"]}

`python -m tests.bootlab --spec F --listen IP:PORT --base-url URL --tftp-root D
[--events F] [--copy]` runs the HTTP boot server over it (in a namespace).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from appliance.runtime.stopsignal import StopSignal
from netservices.backend import Artifact, BootTarget, HostRecord, Pending, Segment


class Rejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class SpecBackend:
    """HostDirectory + EventSink + BootArtifacts + AgentSink over a spec dict."""

    def __init__(self, spec: dict, events_path: str | None = None):
        self.spec = spec
        self.events_path = events_path
        self.events: list[dict] = []
        self.tokens: dict[str, tuple[int, str]] = {}
        self.reports: list[dict] = []
        self._lock = threading.Lock()

    # HostDirectory
    def host_by_mac(self, mac: str) -> HostRecord | None:
        for h in self.spec.get("hosts", []):
            if mac in h["macs"]:
                return HostRecord(name=h["name"], id=h["id"], macs=tuple(h["macs"]),
                                  mode=h.get("mode", "netboot"))
        return None

    def host_by_ip(self, ip: str) -> HostRecord | None:
        return None  # a spec has no leases: fetches go on a host by its script only

    # EventSink
    def event(self, kind, message="", *, level="info", host_id=None, mac=None, ip=None,
              data=None) -> None:
        e = {"kind": kind, "message": message, "level": level, "host_id": host_id, "mac": mac,
             "ip": ip, "data": data}
        with self._lock:
            self.events.append(e)
            if self.events_path:
                with open(self.events_path, "a") as f:
                    f.write(json.dumps(e) + "\n")

    # BootArtifacts
    def _target(self, basename: str, number: int | None = None) -> BootTarget:
        s = self.spec["systems"][basename]
        return BootTarget(toplevel="/nix/store/" + basename, label=s.get("label", basename),
                          number=number, kernel_params=tuple(s.get("params", ())))

    def boot_targets(self, host: HostRecord) -> list[BootTarget]:
        for h in self.spec.get("hosts", []):
            if h["id"] == host.id:
                n = len(h.get("targets", []))
                return [self._target(b, n - i) for i, b in enumerate(h.get("targets", []))]
        return []

    def artifact(self, toplevel: str, name: str) -> Artifact | None:
        base = toplevel.rsplit("/", 1)[-1]
        s = self.spec.get("systems", {}).get(base)
        if s is None or name not in ("kernel", "initrd"):
            return None
        paths = [s["kernel"]] if name == "kernel" else list(s["initrd"])
        segs = tuple(Segment(p, 0, os.path.getsize(p)) for p in paths)
        tag = hashlib.sha256(json.dumps([(p, os.stat(p).st_size, os.stat(p).st_mtime_ns)
                                         for p in paths]).encode()).hexdigest()[:32]
        return Artifact(name=name, segments=segs, size=sum(x.length for x in segs), etag=tag)

    def closure_listing(self, toplevel: str) -> list[tuple[str, int]] | None:
        return None  # no cached netboot here (tests/unit/test_cached_netboot.py has it)

    def path_artifact(self, toplevel: str, basename: str) -> Artifact | None:
        return None

    def resolve(self, kind: str, args: list[str]) -> BootTarget:
        key = "/".join([kind, *args])
        if key in self.spec.get("pending", []):
            raise Pending(f"building {key}", retry_after=3)
        if kind == "closure":
            if args[0] in self.spec.get("systems", {}):
                return self._target(args[0])
            raise LookupError(f"no closure {args[0]}")
        base = self.spec.get("dispatch", {}).get(key)
        if base is None:
            raise LookupError(f"no {key}")
        return self._target(base)

    def issue_boot_token(self, host: HostRecord, target: BootTarget, client_ip: str,
                         purpose: str) -> str | None:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = (host.id, target.toplevel)
        return token

    # AgentSink
    def agent_report(self, token: str, event: str, message: str, source_ip: str,
                     ssh_host_key: str | None = None) -> dict:
        with self._lock:
            hit = self.tokens.get(token)
        if hit is None:
            raise Rejected(401, "wrong or expired token")
        if event not in ("booted", "installing", "installed", "failed"):
            raise Rejected(400, "bad event")
        with self._lock:
            last = [r for r in self.reports if r["host_id"] == hit[0]]
        if event == "installed" and (not last or last[-1]["event"] != "installing"):
            raise Rejected(409, "cannot become installed before installing")
        r = {"host_id": hit[0], "event": event, "message": message, "ip": source_ip}
        if ssh_host_key is not None:
            r["ssh_host_key"] = ssh_host_key
        with self._lock:
            self.reports.append(r)
        self.event("agent." + event, message, host_id=hit[0], ip=source_ip)
        return {"host_id": hit[0], "state": event, "ip": source_ip}


def store_basename(name: str, seed: str | None = None) -> str:
    """A valid-looking store basename (nix base32 alphabet) for test systems."""
    alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
    digest = hashlib.sha256((seed or name).encode()).digest()
    return "".join(alphabet[b % 32] for b in digest[:32]) + "-" + name


def main(argv: list[str] | None = None) -> int:
    from netservices.httpboot import BootSettings, create_boot_app, make_servers, run_quietly

    ap = argparse.ArgumentParser(prog="python -m tests.bootlab")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--tftp-root", required=True)
    ap.add_argument("--events")
    ap.add_argument("--menu", action="store_true")
    ap.add_argument("--copy", action="store_true", help="file wrapper copies instead of sendfile")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    backend = SpecBackend(json.loads(Path(args.spec).read_text()), args.events)
    settings = BootSettings(base_url=args.base_url.rstrip("/"), menu=args.menu,
                            menu_timeout_seconds=2, retry_seconds=3)
    app = create_boot_app(hosts=backend, events=backend, artifacts=backend, agent=backend,
                          settings=settings, tftp_root=args.tftp_root, zero_copy=not args.copy)
    servers = make_servers(app, args.listen, args.workers, args.threads, zero_copy=not args.copy)

    # the handler only records the signal (StopSignal takes no lock); the main thread
    # closes the servers, as serve does
    stopping = StopSignal().install(signal.SIGTERM)
    threads = [threading.Thread(target=run_quietly, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    print("ready", flush=True)
    stopping.wait()
    for s in servers:
        s.close()
    for t in threads:
        t.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
