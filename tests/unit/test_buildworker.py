"""The build worker's pure parts: Nix's internal-json stream folded into
progress, Nix's error text, the remote builder spec, the generation bookkeeping."""

from __future__ import annotations

import base64
import json

from appliance.config.schema import load_config
from appliance.domain import builds, hosts
from appliance.nix.buildworker import (
    Progress,
    builder_args,
    claim_next,
    nix_error_text,
    record_failure,
    record_success,
)
from appliance.state.db import Store


def nix_line(**m) -> str:
    return "@nix " + json.dumps(m) + "\n"


# a real stream shape from `nix build --log-format internal-json` (Nix 2.8)
STREAM = [
    nix_line(action="start", id=1, level=0, text="", type=102),
    nix_line(action="start", id=2, level=0, text="", type=104),
    nix_line(action="start", id=3, level=0, text="", type=103),
    nix_line(action="result", id=2, type=105, fields=[0, 3, 0, 0]),
    nix_line(action="result", id=2, type=105, fields=[0, 2, 0, 0]),
    nix_line(action="start", id=9, level=3, type=105, text="building '/nix/store/aaa-x.drv'",
             fields=["/nix/store/aaa-x.drv", "", 1, 1]),
    nix_line(action="result", id=9, type=101, fields=["hello from the builder"]),
    nix_line(action="result", id=9, type=104, fields=["buildPhase"]),
    nix_line(action="result", id=2, type=105, fields=[0, 2, 1, 0]),
    nix_line(action="stop", id=9),
    nix_line(action="result", id=2, type=105, fields=[1, 2, 0, 0]),
    nix_line(action="start", id=11, level=3, type=100,
             text="copying path '/nix/store/bbb-y' from 'ssh-ng://b'"),
    nix_line(action="result", id=3, type=105, fields=[1, 1, 0, 0]),
    nix_line(action="stop", id=11),
    nix_line(action="result", id=2, type=105, fields=[2, 2, 0, 0]),
    nix_line(action="msg", level=0, msg="\x1b[31;1merror:\x1b[0m something broke"),
    "not json at all\n",
    "@nix {broken json\n",
]


def test_progress_follows_nix_latest_figures_and_extracts_log_text():
    p = Progress()
    texts = [t for t in (p.feed(x) for x in STREAM) if t is not None]
    d = p.to_dict()
    assert (d["builds_done"], d["builds_expected"]) == (2, 2)
    assert (d["paths_fetched"], d["paths_expected"]) == (1, 1)
    assert d["phase"] == "buildPhase" and d["running"] == []
    assert "building '/nix/store/aaa-x.drv'" in texts
    assert "hello from the builder" in texts
    assert "copying path '/nix/store/bbb-y' from 'ssh-ng://b'" in texts
    assert "error: something broke" in texts  # ANSI colours stripped
    assert "not json at all" in texts and "@nix {broken json" in texts


def test_progress_running_list_tracks_open_builds():
    p = Progress()
    p.feed(STREAM[5])
    assert p.to_dict()["running"] == ["building '/nix/store/aaa-x.drv'"]
    p.feed(STREAM[9])
    assert p.to_dict()["running"] == []


def test_nix_error_text_starts_at_the_error():
    lines = ["building '/nix/store/x.drv'...", "some output", "error: builder for x failed",
             "       last 10 log lines:", "       > boom"]
    assert nix_error_text(lines) == "error: builder for x failed\n       last 10 log lines:\n       > boom"
    assert nix_error_text(["only", "noise"]) == "only\nnoise"
    assert nix_error_text([]) == "nix build failed"


def _cfg(tmp_path, **builder):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"state_dir": str(tmp_path / "s"), "dhcp": {"mode": "off"},
                                "builder": builder}))
    return load_config(path)


def test_builder_args_local_and_remote(tmp_path):
    assert builder_args(_cfg(tmp_path, kind="local")) == []
    cfg = _cfg(tmp_path, kind="remote", uri="ssh-ng://nix@b", ssh_key="/k", max_jobs=4,
               host_key="ssh-ed25519 AAAAC3")
    args = builder_args(cfg)
    spec = args[args.index("--builders") + 1].split(" ")
    assert spec[:4] == ["ssh-ng://nix@b", "x86_64-linux", "/k", "4"]
    assert base64.b64decode(spec[7]).decode() == "ssh-ed25519 AAAAC3"
    assert args[args.index("--max-jobs") + 1] == "0"  # never build locally


def test_generations_numbering_keep_n_and_failure_keeps_current(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    conn = store.conn()
    hosts.add_host(conn, "demo", ["52:54:00:00:00:01"], "/f", None, "netboot")
    dropped = []
    for i in range(5):
        b = builds.enqueue(conn, "demo")
        claimed = claim_next(conn)
        assert claimed["id"] == b["id"] and claim_next(conn) is None
        gen, drop = record_success(conn, claimed, f"/nix/store/{i:032d}-sys", f"/roots/{i}", keep=3)
        assert gen["number"] == i + 1
        dropped += drop
    assert dropped == ["/roots/0", "/roots/1"]
    h = hosts.get_host(conn, "demo")
    assert h["current_generation"] == 5
    nums = [r[0] for r in conn.execute("SELECT number FROM generations ORDER BY number")]
    assert nums == [3, 4, 5]
    b = builds.enqueue(conn, "demo")
    record_failure(conn, claim_next(conn), "error: boom")
    assert builds.get_build(conn, b["id"])["error"] == "error: boom"
    assert hosts.get_host(conn, "demo")["current_generation"] == 5
    kinds = [r[0] for r in conn.execute("SELECT kind FROM events ORDER BY id")]
    assert "build.failed" in kinds and kinds.count("build.succeeded") == 5
