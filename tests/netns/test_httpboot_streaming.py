"""The HTTP boot server in a namespace, curl in another: bytes, resume, HEAD, escapes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from lab.netns import Netns, veth, wait_port
from tests.bootlab import store_basename
from tests.conftest import ROOT

SERVER, CLIENT, PORT = "10.78.0.1", "10.78.0.2", 8081
BASE = f"http://{SERVER}:{PORT}"
MAC = "52:54:00:0b:00:01"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["sendfile", "copy"])
def boot(request, tmp_path):
    tmp_path.chmod(0o755)
    parts = []
    for i, n in enumerate((3_000_000, 1_500_001)):
        p = tmp_path / f"initrd.{i}"
        p.write_bytes(os.urandom(n))
        parts.append(p)
    kernel = tmp_path / "kernel"
    kernel.write_bytes(os.urandom(2_000_000))
    b = store_basename("nixos-system-netns")
    spec = {"hosts": [{"name": "n1", "id": 7, "macs": [MAC], "targets": [b]}],
            "systems": {b: {"label": "generation 1", "kernel": str(kernel),
                            "initrd": [str(p) for p in parts]}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    tftp_root = tmp_path / "tftp"
    tftp_root.mkdir()
    (tftp_root / "snponly.efi").write_bytes(open("/usr/lib/ipxe/snponly.efi", "rb").read())
    (tmp_path / "secret").write_text("top secret")
    os.symlink(tmp_path / "secret", tftp_root / "escape")
    srv, cli = Netns(), Netns()
    try:
        veth(srv, "eth0", cli, "eth0")
        srv.run("ip", "addr", "add", f"{SERVER}/24", "dev", "eth0")
        cli.run("ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        argv = [sys.executable, "-m", "tests.bootlab", "--spec", str(tmp_path / "spec.json"),
                "--listen", f"{SERVER}:{PORT}", "--base-url", BASE, "--tftp-root", str(tftp_root),
                "--events", str(tmp_path / "events.jsonl")]
        if request.param == "copy":
            argv.append("--copy")
        proc = srv.popen(*argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(srv, SERVER, PORT, timeout=20)
        yield {"cli": cli, "b": b, "initrd": b"".join(p.read_bytes() for p in parts),
               "kernel": kernel.read_bytes(), "out": tmp_path, "events": tmp_path / "events.jsonl"}
        proc.terminate()
        proc.wait(10)
    finally:
        srv.close()
        cli.close()


def curl(cli: Netns, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return cli.run("curl", "-sS", *args, check=check, timeout=60)


def test_script_kernel_initrd_and_resume(boot):
    cli, b, out = boot["cli"], boot["b"], boot["out"]
    script = curl(cli, f"{BASE}/boot/{MAC}.ipxe").stdout
    assert f"kernel {BASE}/boot/{b}/kernel initrd=initrd" in script
    curl(cli, "-o", str(out / "k"), f"{BASE}/boot/{b}/kernel")
    assert sha((out / "k").read_bytes()) == sha(boot["kernel"])
    # a download cut at 1 MB, then resumed with a Range request
    (out / "i").write_bytes(boot["initrd"][:1_000_000])
    r = curl(cli, "-C", "-", "-o", str(out / "i"), "-w", "%{http_code}", f"{BASE}/boot/{b}/initrd")
    assert r.stdout == "206"
    assert sha((out / "i").read_bytes()) == sha(boot["initrd"])
    head = curl(cli, "-I", f"{BASE}/boot/{b}/initrd").stdout.lower()
    assert f"content-length: {len(boot['initrd'])}" in head and "etag:" in head
    events = [json.loads(line) for line in boot["events"].read_text().splitlines()]
    done = [e for e in events if e["kind"] == "boot.initrd" and e["data"]["status"] == "completed"]
    assert done and done[-1]["host_id"] == 7 and done[-1]["ip"] == CLIENT


def test_concurrent_downloads_get_the_same_bytes(boot):
    cli, b, out = boot["cli"], boot["b"], boot["out"]
    procs = [cli.popen("curl", "-sSf", "-o", str(out / f"c{i}"), f"{BASE}/boot/{b}/initrd")
             for i in range(8)]
    assert [p.wait(60) for p in procs] == [0] * 8
    want = sha(boot["initrd"])
    assert all(sha((out / f"c{i}").read_bytes()) == want for i in range(8))


def test_ipxe_over_http_and_escapes(boot):
    cli, out = boot["cli"], boot["out"]
    curl(cli, "-f", "-o", str(out / "snp"), f"{BASE}/ipxe/snponly.efi")
    assert sha((out / "snp").read_bytes()) == sha(open("/usr/lib/ipxe/snponly.efi", "rb").read())
    for path in ("/ipxe/escape", "/ipxe/../../../etc/passwd", "/ipxe/%2e%2e/secret",
                 "/ipxe/..%2fsecret", "/boot/..%2f..%2fetc%2fpasswd/kernel"):
        r = curl(cli, "--path-as-is", "-o", str(out / "x"), "-w", "%{http_code}", BASE + path)
        assert r.stdout in ("400", "403", "404"), (path, r.stdout)
        assert b"secret" not in (out / "x").read_bytes()
