"""nixos-image/agent/nixie-agent, run for real (busybox sh + busybox wget, and dash + curl)
against a recording HTTP server inside a namespace this test made.

The recorder (tests/agent_recorder.py) shows what the router's endpoint would receive:
the bearer header, the JSON body, the retries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.agent_recorder import AGENT, PORT, busybox_bin, recording_router

TOKEN = "tok-3Fq9_zZ~a.b+c/d="  # every character class a bearer token may hold


@pytest.fixture
def busybox_path(tmp_path):
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed")
    return str(busybox_bin(tmp_path / "bb"))


@pytest.fixture
def recorder(tmp_path):
    """(ns, set_plan, requests) of a recording router in a fresh namespace."""
    with recording_router(tmp_path) as rec:
        yield rec.ns, rec.set_plan, rec.requests


def run_agent(ns, client, busybox_path, tmp_path, *args, env=None):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"BOOT_IMAGE=/kernel init=/nix/store/x-nixos-system/init quiet "
                       f"nixie.api=http://127.0.0.1:{PORT} nixie.token={TOKEN} console=ttyS0\n")
    # (not this machine's own /etc/ssh key, the default)
    base = {"NIXIE_CMDLINE": str(cmdline), "NIXIE_AGENT_BACKOFF": "1", "TMPDIR": str(tmp_path),
            "NIXIE_SSH_HOST_KEY_FILE": str(tmp_path / "no-host-key.pub")}
    if client == "busybox-wget":
        argv = [shutil.which("busybox"), "sh", str(AGENT), *args]
        base["PATH"] = busybox_path
    else:
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        argv = ["/bin/sh", str(AGENT), *args]
        base["PATH"] = "/usr/bin:/bin"
    env_args = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
    return subprocess.run(ns.argv("env", "-i", *env_args, *argv), capture_output=True, text=True,
                          timeout=120)


CLIENTS = ["busybox-wget", "curl"]
MESSAGE = 'generation 7 "nixos" at C:\\boot\n\ttab and ünïcode\x07bell'


@pytest.mark.parametrize("client", CLIENTS)
def test_report_retries_503_with_backoff_then_lands(recorder, client, busybox_path, tmp_path):
    ns, set_plan, requests = recorder
    set_plan([503, 503, 200])
    r = run_agent(ns, client, busybox_path, tmp_path, "booted", MESSAGE)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    reqs = requests()
    assert len(reqs) == 3
    for req in reqs:
        assert req["method"] == "POST" and req["path"] == "/api/v1/agent/events"
        headers = {k.lower(): v for k, v in req["headers"].items()}
        body = json.loads(req["body"])
        if client == "curl":
            assert headers["authorization"] == f"Bearer {TOKEN}"
        else:  # busybox wget cannot read a header from a file: the body carries it
            assert "authorization" not in headers and body.pop("token") == TOKEN
        assert req["token"] == TOKEN and req["token_in_argv"] == [], req["token_in_argv"]
        assert headers["content-type"] == "application/json"
        # the control character is dropped; quotes, backslash, newline, tab survive
        assert body == {"event": "booted", "message": MESSAGE.replace("\x07", "")}
    assert "retrying in 1s" in out and "retrying in 2s" in out, out
    assert "reported booted" in out
    assert TOKEN not in out


@pytest.mark.parametrize("client", CLIENTS)
def test_refusal_is_final_and_giving_up_is_bounded(recorder, client, busybox_path, tmp_path):
    ns, set_plan, requests = recorder
    set_plan([401])
    r = run_agent(ns, client, busybox_path, tmp_path, "installed")
    assert r.returncode == 3, r.stderr
    assert "HTTP 401" in r.stderr
    assert len(requests()) == 1

    set_plan([500])
    r = run_agent(ns, client, busybox_path, tmp_path, "failed", "disko failed",
                  env={"NIXIE_AGENT_ATTEMPTS": "2"})
    assert r.returncode == 1, r.stderr
    assert "giving up" in r.stderr and "HTTP 500" in r.stderr
    later = requests()[1:]
    assert len(later) == 2
    assert all({k: v for k, v in json.loads(q["body"]).items() if k != "token"}
               == {"event": "failed", "message": "disko failed"} for q in later)
    assert TOKEN not in r.stdout + r.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_router_is_retried_then_reported(recorder, client, busybox_path, tmp_path):
    ns, _, requests = recorder
    r = run_agent(ns, client, busybox_path, tmp_path, "--api", "http://127.0.0.1:9", "--token",
                  TOKEN, "installing", env={"NIXIE_AGENT_ATTEMPTS": "2"})
    assert r.returncode == 1, r.stderr
    assert "no answer" in r.stderr and "retrying in 1s" in r.stderr
    assert TOKEN not in r.stdout + r.stderr
    assert requests() == []


def test_arguments_override_the_command_line_and_token_file(recorder, busybox_path, tmp_path):
    ns, set_plan, requests = recorder
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    os.chmod(token_file, 0o600)
    r = run_agent(ns, "busybox-wget", busybox_path, tmp_path, "--token-file", str(token_file),
                  "installing")
    assert r.returncode == 0, r.stderr
    (req,) = requests()
    assert "Authorization" not in req["headers"] and req["token_in_argv"] == []
    assert json.loads(req["body"]) == {"event": "installing", "message": "",
                                       "token": "from-file-token"}


def test_wget_path_never_puts_the_token_on_a_command_line(recorder, busybox_path, tmp_path):
    """The attack: a local user reading every /proc/*/cmdline (what `ps` shows) while
    the busybox-wget report is in flight. The recorder scans them during the request;
    a process that does hold the token in its argv proves the scan would see it."""
    ns, _, requests = recorder
    decoy_argv = [sys.executable, "-c", "import time; time.sleep(60)", TOKEN]
    decoy = subprocess.Popen(decoy_argv)
    try:
        r = run_agent(ns, "busybox-wget", busybox_path, tmp_path, "booted", "gen 3")
    finally:
        decoy.kill()
        decoy.wait()
    assert r.returncode == 0, r.stderr
    (req,) = requests()
    assert req["token"] == TOKEN
    # the decoy is seen, and nothing else: not wget, not timeout, not the shell
    assert req["token_in_argv"] == [[*decoy_argv, ""]], req["token_in_argv"]


@pytest.mark.parametrize("args, problem", [
    (["rebooted"], "unknown event"),
    ([], "usage"),
    (["--api", "ftp://x", "booted"], "must start with http"),
    (["--token", "a b\"c", "booted"], "characters a bearer token cannot have"),
])
def test_bad_usage_exits_2_without_sending(recorder, busybox_path, tmp_path, args, problem):
    ns, _, requests = recorder
    r = run_agent(ns, "busybox-wget", busybox_path, tmp_path, *args)
    assert r.returncode == 2
    assert problem in r.stderr
    assert requests() == []


def test_missing_token_is_a_clear_error(recorder, busybox_path, tmp_path):
    ns, _, requests = recorder
    empty = tmp_path / "empty-cmdline"
    empty.write_text("quiet\n")
    r = run_agent(ns, "busybox-wget", busybox_path, tmp_path, "--api",
                  f"http://127.0.0.1:{PORT}", "booted", env={"NIXIE_CMDLINE": str(empty)})
    assert r.returncode == 2
    assert "no token" in r.stderr
    assert requests() == []


@pytest.mark.parametrize("client", CLIENTS)
def test_the_host_key_goes_with_the_report(recorder, client, busybox_path, tmp_path):
    """The host's SSH public key (type and base64, not its comment) is in the body, which
    the router pins; a file that is not a public key sends none."""
    ns, set_plan, requests = recorder
    set_plan([200, 200])
    key = tmp_path / "host.pub"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", 'root@x "quoted"',
                    "-f", str(tmp_path / "host")], check=True)
    r = run_agent(ns, client, busybox_path, tmp_path, "booted", env={
        "NIXIE_SSH_HOST_KEY_FILE": str(key)})
    assert r.returncode == 0, r.stderr
    body = json.loads(requests()[-1]["body"])
    assert body["ssh_host_key"] == " ".join(key.read_text().split()[:2])
    key.write_text('not-a-key "}, "event": "installed\n')
    r = run_agent(ns, client, busybox_path, tmp_path, "booted", env={
        "NIXIE_SSH_HOST_KEY_FILE": str(key)})
    assert r.returncode == 0, r.stderr
    body = json.loads(requests()[-1]["body"])
    assert "ssh_host_key" not in body and body["event"] == "booted"
