"""Finding 8 of issue 15 against the real TFTP server (two worker processes): 1 100
silent read requests asking `timeout=255`, from ten addresses, cannot fill the
transfer table, each gets at most three packets back (no 165x amplification, the
timeout is not granted), and a real tftp-hpa client from another address gets its
file while the flood is on."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from netservices.tftp.server import MAX_PER_CLIENT, UNHEARD_SENDS
from tests.netns.tftp_lab import sha, tftp_lab

SERVER, CLIENT = "10.83.0.1", "10.83.0.2"
ATTACKERS = [f"10.83.0.{50 + i}" for i in range(10)]
WORKERS = 2


@pytest.fixture
def lab(tmp_path):
    tmp_path.chmod(0o755)
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    with tftp_lab(root, SERVER, CLIENT, "--workers", str(WORKERS)) as lab:
        for a in ATTACKERS:
            lab.client.run("ip", "addr", "add", f"{a}/24", "dev", "eth0")
        yield lab, out


def test_silent_requests_neither_jam_nor_amplify(lab):
    lab, out = lab
    flood = lab.client.popen(sys.executable, "-m", "tests.netns.tftp_forge", SERVER, "110",
                             *ATTACKERS, stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout.readline().strip() == "sent"
        # while the flood's transfers are live, a real client from another address
        r = lab.client.run("tftp", "-m", "binary", SERVER, "-c", "get", "undionly.kpxe",
                           str(out / "u.kpxe"), check=False, timeout=60)
        assert r.returncode == 0 and sha(out / "u.kpxe") == sha("/usr/lib/ipxe/undionly.kpxe"), r
        report = json.loads(flood.communicate(timeout=120)[0].strip().splitlines()[-1])
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    tids = report["tids"]
    assert report["requests"] == 1100 and tids
    # per request at most three packets, no ERROR at the end, and timeout=255 not granted
    assert max(t["packets"] for t in tids.values()) <= UNHEARD_SENDS
    assert not [t for t in tids.values() if 5 in t["opcodes"]]
    assert not [t for t in tids.values() if t["oack"] and "timeout" in t["oack"]]
    received = sum(t["bytes"] for t in tids.values())
    assert received < 3 * 516 * len(tids) and len(tids) < report["requests"]
    # each address got at most MAX_PER_CLIENT transfers per worker at a time
    per_addr = Counter(k.split(">")[0] for k in tids)
    assert max(per_addr.values()) <= MAX_PER_CLIENT * WORKERS * 2, per_addr
    stats = lab.stop()
    assert stats["dropped_per_client"] > 0 and stats["unheard"] == len(tids), stats
    assert stats["active"] == 0 and stats["completed"] == 1, stats
