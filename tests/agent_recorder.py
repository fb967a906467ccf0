"""A recording stand-in for the router's agent endpoint, run inside a test's namespace.

It answers each POST with the next status of its plan (the last one repeats) and
writes every request (method, path, headers, body, the token presented and every
process command line holding it while the request was open) as one JSON line, so tests
check what the router would receive and what `ps` would have shown. Used by the agent and installer tests until they can
run against the real endpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.netns import Netns, wait_port
from tests.conftest import ROOT

AGENT = ROOT / "nixos-image" / "agent" / "nixie-agent"
PORT = 8081

RECORDER = r'''
import http.server, json, os, sys
plan_file, log_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

def argv_holding(secret):
    """The command lines (of every process on this machine) holding `secret`, read
    while the client waits for this answer: what `ps` would show any local user."""
    hits = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if secret and secret.encode() in argv:
            hits.append(argv.decode("utf-8", "replace").split("\0"))
    return hits


def presented_token(headers, body):
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if token:
        return token
    try:
        return json.loads(body).get("token", "")
    except ValueError:
        return ""


class Recorder(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        token = presented_token(self.headers, body)
        with open(log_file, "a") as log:
            log.write(json.dumps({"method": "POST", "path": self.path,
                                  "headers": dict(self.headers.items()),
                                  "body": body.decode("utf-8", "replace"),
                                  "token": token,
                                  "token_in_argv": argv_holding(token)}) + "\n")
        with open(log_file) as log:
            n = sum(1 for _ in log)
        plan = json.load(open(plan_file))
        status = plan[min(n, len(plan)) - 1]
        reply = json.dumps({"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Recorder).serve_forever()
'''

BUSYBOX_APPLETS = ("sh", "wget", "cat", "head", "sed", "awk", "tr", "mktemp", "rm", "sleep", "readlink",
                   "timeout", "printf")


def busybox_bin(directory: Path) -> Path:
    """DIRECTORY filled with busybox applets only (no curl, no coreutils)."""
    bb = shutil.which("busybox")
    assert bb is not None, "busybox is not installed"
    directory.mkdir(parents=True, exist_ok=True)
    for applet in BUSYBOX_APPLETS:
        if not (directory / applet).is_symlink():
            (directory / applet).symlink_to(bb)
    return directory


class Recording:
    def __init__(self, ns: Netns, plan: Path, log: Path):
        self.ns, self._plan, self._log = ns, plan, log

    def set_plan(self, statuses: list[int]) -> None:
        self._plan.write_text(json.dumps(statuses))

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self._log.read_text().splitlines()]

    def events(self) -> list[dict]:
        """The reports' bodies without the token (wget sends it there)."""
        return [{k: v for k, v in json.loads(r["body"]).items() if k != "token"}
                for r in self.requests()]


@contextmanager
def recording_router(tmp_path: Path) -> Iterator[Recording]:
    """A fresh namespace with the recorder on 127.0.0.1:8081; everything removed after."""
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    plan, log = tmp_path / "plan.json", tmp_path / "requests.jsonl"
    plan.write_text("[200]")
    log.touch()
    with Netns() as ns:
        proc = ns.popen(sys.executable, str(script), str(plan), str(log), str(PORT),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_port(ns, "127.0.0.1", PORT)
            yield Recording(ns, plan, log)
        finally:
            proc.terminate()
            proc.wait(5)
