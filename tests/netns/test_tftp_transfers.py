"""Our TFTP server in a namespace, real clients (curl, tftp-hpa) in another."""

from __future__ import annotations

import os
import sys

import pytest

from tests.netns.tftp_lab import sha, tftp_lab

SERVER, CLIENT = "10.79.0.1", "10.79.0.2"


@pytest.fixture
def tftp(tmp_path):
    tmp_path.chmod(0o755)
    root = tmp_path / "root"
    (tmp_path / "secret.txt").write_text("outside the root")
    root.mkdir()
    os.symlink(tmp_path / "secret.txt", root / "escape")
    with tftp_lab(root, SERVER, CLIENT) as lab:
        out = tmp_path / "out"
        out.mkdir()
        yield lab.client, root, out, lab.stop


def test_curl_and_tftp_hpa_fetch_the_right_bytes(tftp):
    cli, root, out, _ = tftp
    for name in ("ipxe.efi", "undionly.kpxe", "snponly.efi"):
        assert not (root / name).is_symlink()
        assert sha(root / name) == sha(f"/usr/lib/ipxe/{name}")
    cli.run("curl", "-sSf", "--tftp-blksize", "1468", "-o", str(out / "a.efi"),
            f"tftp://{SERVER}/ipxe.efi")
    assert sha(out / "a.efi") == sha("/usr/lib/ipxe/ipxe.efi")
    cli.run("tftp", "-m", "binary", SERVER, "-c", "get", "undionly.kpxe", str(out / "u.kpxe"))
    assert sha(out / "u.kpxe") == sha("/usr/lib/ipxe/undionly.kpxe")


def test_twenty_concurrent_clients(tftp):
    """Twenty machines at once (twenty addresses: one address gets at most
    MAX_PER_CLIENT transfers at a time, see test_tftp_hostile)."""
    cli, root, out, _ = tftp
    for i in range(20):
        cli.run("ip", "addr", "add", f"10.79.0.{100 + i}/24", "dev", "eth0")
    procs = [cli.popen("curl", "-sSf", "--tftp-blksize", "1468" if i % 2 else "512",
                       "--interface", f"10.79.0.{100 + i}",
                       "-o", str(out / f"c{i}"), f"tftp://{SERVER}/ipxe.efi")
             for i in range(20)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 20
    want = sha("/usr/lib/ipxe/ipxe.efi")
    assert all(sha(out / f"c{i}") == want for i in range(20))


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/passwd", "escape",
                                  "sub/../../secret.txt"])
def test_path_escapes_get_an_error_and_nothing(tftp, name):
    cli, root, out, _ = tftp
    r = cli.run("tftp", "-m", "binary", SERVER, "-c", "get", name, str(out / "x"), check=False)
    assert "Error code 2" in r.stdout + r.stderr, r
    assert not (out / "x").exists() or (out / "x").stat().st_size == 0
    r = cli.run("curl", "-sS", "--path-as-is", "-o", str(out / "y"), f"tftp://{SERVER}/{name}",
                check=False)
    assert r.returncode != 0
    assert not (out / "y").exists() or b"outside" not in (out / "y").read_bytes()


def test_writes_are_refused_and_malformed_packets_counted(tftp, tmp_path):
    cli, root, out, stop = tftp
    (tmp_path / "up.txt").write_text("upload")
    r = cli.run("tftp", "-m", "binary", SERVER, "-c", "put", str(tmp_path / "up.txt"), "up.txt",
                check=False)
    assert "Error code 2" in r.stdout + r.stderr
    assert not (root / "up.txt").exists()
    junk = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            f"[s.sendto(b, ('{SERVER}', 69)) for b in (b'\\x00', b'\\x00\\x01x', b'\\x00\\x07zz\\x00')]")
    cli.run(sys.executable, "-c", junk)
    cli.run("curl", "-sSf", "-o", str(out / "after"), f"tftp://{SERVER}/snponly.efi")
    assert sha(out / "after") == sha("/usr/lib/ipxe/snponly.efi")
    stats = stop()
    assert stats["malformed"] == 3 and stats["refused"] == 1 and stats["completed"] == 1, stats
