"""The fuzz bench's harness (bench/fuzz), small: ~2 000 inputs per protocol through the
same targets `make bench` runs 10^6 of, so the harness cannot rot; that it really
catches a crash and a hang; and the inputs it found crashing, kept as regressions."""

from __future__ import annotations

import json
import random
import struct
import time

import pytest

from bench.fuzz import harness
from bench.fuzz.harness import Hang, Watchdog, run_fuzz
from bench.fuzz.targets import (
    PROTOCOLS,
    SYS_A,
    TARGETS,
    AgentTarget,
    HttpBootTarget,
    Target,
    call_wsgi,
    dns_query,
    dns_reply,
    environ_for,
)
from netservices.dhcp import codec as dhcp_codec
from netservices.dns import wire
from netservices.dns.cache import ForwardCache
from netservices.httpboot.streaming import Unsatisfiable, parse_range
from tests.dhcp_helpers import client_packet


def test_every_protocol_runs_clean_through_codec_and_handler(tmp_path):
    totals = run_fuzz(PROTOCOLS, inputs=2000, seed=20240615, jobs=1, crash_dir=tmp_path,
                      chunk_size=1000)
    assert set(totals) == {"dhcp", "tftp", "dns", "http", "agent"}
    for t in totals.values():
        assert (t.crashes, t.hangs) == (0, 0), f"{t.protocol}: {dict(t.signatures)} {t.saved}"
        assert t.inputs == 2000 and t.parsed + t.rejected == t.inputs
        # both sides are exercised: inputs the server accepts and inputs it drops
        assert t.parsed > 20 and t.rejected > 20, (t.protocol, t.parsed, t.rejected)
    assert not list(tmp_path.iterdir())


class Boom(Target):
    """A target with a bug on every 50th input and an endless loop on the 120th."""

    name = "boom"

    def __init__(self, workdir):
        super().__init__(workdir)
        self.n = 0

    def generate(self, rng):
        self.n += 1
        return struct.pack("!I", self.n)

    def run(self, inp):
        n = struct.unpack("!I", inp)[0]
        if n == 120:
            while True:
                pass
        if n % 50 == 0:
            raise KeyError(n)
        return n % 2 == 0


def test_harness_counts_crashes_and_hangs_and_saves_the_inputs(tmp_path, monkeypatch):
    monkeypatch.setitem(TARGETS, "boom", Boom)
    t = run_fuzz(["boom"], inputs=200, seed=1, jobs=1, crash_dir=tmp_path)["boom"]
    assert (t.inputs, t.crashes, t.hangs) == (200, 4, 1)  # 50, 100, 150, 200; 120
    assert t.parsed + t.rejected == 195
    assert sum(v for k, v in t.signatures.items() if k.startswith("KeyError at")) == 4
    # at most 3 saved per crash site: 3 KeyErrors and the hang, a .bin and a .txt each
    assert len(list(tmp_path.glob("boom-*.bin"))) == 4 and len(list(tmp_path.iterdir())) == 8
    crash_txt = next(p for p in tmp_path.glob("boom-*.txt") if "KeyError" in p.read_text())
    assert "seed 1 protocol boom chunk 0" in crash_txt.read_text()


def test_watchdog_interrupts_a_blocked_input():
    with Watchdog(cpu_limit=5.0, wall_limit=0.2) as dog:
        dog.serial += 1
        dog.armed = True
        t0 = time.monotonic()
        with pytest.raises(Hang, match="wall time"):
            time.sleep(5)
        dog.armed = False
    assert time.monotonic() - t0 < 2


def test_replay_runs_a_saved_input(tmp_path):
    assert harness.replay("dhcp", client_packet(dhcp_codec.DISCOVER, "52:54:00:00:00:09"),
                          str(tmp_path)) is True
    harness.close_targets()


# ---------------------------------------------------------------- crashers it found
def test_range_with_superscript_digits_is_416_not_500(tmp_path):
    """Crasher: Range 'bytes=1-\u00b9' ('¹' is a digit to str.isdigit, not to int())."""
    for header in ("bytes=1-\u00b9", "bytes=\u00b2-", "bytes=-\u00b3"):
        with pytest.raises(Unsatisfiable):
            parse_range(header, 4096)
    http = HttpBootTarget(tmp_path)
    http.reset(random.Random(0))
    env = environ_for("GET", f"/boot/{SYS_A}/initrd", "", {"Range": "bytes=1-\u00b9"})
    assert call_wsgi(http.app, env) == 416
    assert parse_range("bytes=1-2", 4096) == (1, 2)


@pytest.fixture
def agent_app(tmp_path):
    a = AgentTarget(tmp_path)
    a.reset(random.Random(0))
    yield a
    a.close()


def agent_post(a: AgentTarget, body: bytes) -> tuple[int, dict]:
    box: list = []
    env = environ_for("POST", "/api/v1/agent/events", "",
                      {"Authorization": f"Bearer {a.tokens[0]}", "Content-Length": str(len(body))},
                      body)
    out = b"".join(a.app(env, lambda status, headers, exc_info=None: box.append(status)))
    return int(box[0].split()[0]), json.loads(out)


def test_agent_body_nested_deeper_than_python_recurses_is_400(agent_app):
    """Crasher: 30 000 nested arrays (inside the 64 KiB limit) made json.loads raise
    RecursionError out of the app: a 500 for anyone on the LAN with a token."""
    depth = 30_000
    status, out = agent_post(agent_app, b'{"event": "booted", "message": ' + b"[" * depth
                             + b"]" * depth + b"}")
    assert status == 400 and out == {"error": "body is not JSON"}


def test_agent_message_with_a_lone_surrogate_is_400_and_changes_nothing(agent_app):
    """Crasher: JSON may escape a lone surrogate; SQLite cannot store it (500)."""
    status, out = agent_post(agent_app, b'{"event": "booted", "message": "\\ud800"}')
    assert status == 400 and "Unicode" in out["error"]
    conn = agent_app.store.conn()
    assert conn.execute("SELECT state FROM hosts WHERE name = 'node0'").fetchone()[0] == "unknown"
    status, out = agent_post(agent_app, b'{"event": "booted", "message": "caf\\u00e9 up"}')
    assert status == 200 and out["state"] == "booted"


def test_dhcp_overload_option_inside_an_overloaded_field_is_malformed():
    """Crasher: option 52 = 3 in the options field and again in `file`: parse accepted a
    packet whose own option 52 it could not read back."""
    raw = bytearray(client_packet(dhcp_codec.DISCOVER, "52:54:00:00:00:09", opt52=b"\x03"))
    file_at = 44 + 64  # chaddr 28..44, sname 64 bytes, then file (128)
    raw[file_at:file_at + 4] = b"\x34\x01\x03\xff"
    with pytest.raises(dhcp_codec.MalformedPacket, match="overload"):
        dhcp_codec.parse(bytes(raw))
    good = bytearray(client_packet(dhcp_codec.DISCOVER, "52:54:00:00:00:09", opt52=b"\x01"))
    good[file_at:file_at + 6] = b"\x0c\x03abc\xff"  # hostname carried in `file`
    assert dhcp_codec.parse(bytes(good)).hostname == "abc"


def test_dns_upstream_reply_without_qr_is_not_cached():
    """Crasher: a 'reply' with QR=0 from upstream was cached and served to every client
    asking the name until its TTL ran out: a query, not an answer."""
    query = dns_query("example.com")
    reply = bytearray(dns_reply(query, [(wire.A, bytes([192, 0, 2, 1]))]))
    q = wire.parse_query(query)
    cache = ForwardCache()
    reply[2] &= 0x7F
    assert cache.put((q.key, q.qtype, q.qclass), bytes(reply), 100.0) is False
    assert cache.get(q, 101.0, 512) is None
    reply[2] |= 0x80
    assert cache.put((q.key, q.qtype, q.qclass), bytes(reply), 100.0) is True
    assert cache.get(q, 101.0, 512)[:2] == query[:2]
