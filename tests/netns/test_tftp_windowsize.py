"""TFTP windowsize (RFC 7440) with a real client: atftp 0.8 negotiates it.

Our TFTP server in one namespace, atftp in another. atftp's `--trace` prints
the OACK it received and every ACK it sent: the OACK must carry the windowsize
(capped at our maximum) and blksize asked for, and the client must have acknowledged once per window,
not once per block, which only happens if the server really sent windows.
"""

from __future__ import annotations

import math
import re
import subprocess

import pytest

from netservices.tftp.policy import MAX_WINDOWSIZE
from tests.netns.tftp_lab import sha, tftp_lab

SERVER, CLIENT = "10.79.7.1", "10.79.7.2"
FILE = "/usr/lib/ipxe/ipxe.efi"


@pytest.fixture
def tftp(tmp_path):
    tmp_path.chmod(0o755)
    with tftp_lab(tmp_path / "root", SERVER, CLIENT) as lab:
        yield lab.client, tmp_path


@pytest.mark.parametrize(("window", "granted"), [(16, 16), (500, MAX_WINDOWSIZE)])  # ours caps it
def test_atftp_negotiates_windowsize_and_gets_the_right_bytes(tftp, window, granted):
    cli, tmp = tftp
    out = tmp / "ipxe.efi"
    r = subprocess.run(cli.argv("atftp", "--trace", "--option", f"windowsize {window}",
                                "--option", "blksize 1468", "-g", "-r", "ipxe.efi",
                                "-l", str(out), SERVER),
                       capture_output=True, text=True, timeout=120)
    trace = r.stdout + r.stderr
    assert r.returncode == 0, trace[-2000:]
    assert sha(out) == sha(FILE)
    oack = re.search(r"received OACK <([^>]*)>", trace)
    assert oack, trace[:2000]
    options = dict(re.findall(r"(\w+): (\d+)", oack.group(1)))
    assert options == {"windowsize": str(granted), "blksize": "1468"}, oack.group(0)
    blocks = math.ceil((out.stat().st_size + 1) / 1468)
    acks = len(re.findall(r"sent ACK <block: \d+>", trace))
    assert len(re.findall(r"received \d+\. DATA", trace)) >= blocks
    # lock-step would take blocks + 1 ACKs; windows take about blocks / window
    assert acks < blocks / 2, (acks, blocks)
