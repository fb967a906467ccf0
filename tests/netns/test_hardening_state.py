"""Issue 15, the state: what anonymous traffic can write, a full disk, file modes.

- 1 500 requests nobody logged in for (boot scripts, bad agent tokens, TFTP refusals)
  against a real `nixie serve` leave a bounded number of event rows;
- with the state directory on a full filesystem (a tmpfs this test mounts), a real DHCP
  client renews and keeps its address, a new client is not ACKed a lease that is not on
  disk, and /healthz, `nixie status` and the log say the disk is full; with space again
  the new client gets its lease;
- the same for DHCPv6: a real dhclient -6 gets no REPLY while its lease cannot be
  written, and is bound once there is room again;
- `nixie serve` makes an existing world-readable state directory 0700 and nixie.db 0600.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from lab.netns import Netns, stop_processes, veth
from tests.conftest import run_nixie
from tests.netns.dhcp6_lab import Lan6
from tests.netns.dhcp_lab import Lan
from tests.netns.serve_lab import http_get

pytestmark = pytest.mark.netns

ROUTER = "10.77.0.1"
BUDGET = 20  # retention.anonymous_events_per_minute in these tests

FLOOD = r"""
import http.client, json, socket, sys
host = sys.argv[1]
codes = {}
c = http.client.HTTPConnection(host, 8081, timeout=10)
for i in range(700):  # boot scripts for machines nobody registered
    c.request("GET", "/boot/52:54:00:%02x:%02x:%02x.ipxe" % (i >> 16 & 255, i >> 8 & 255, i & 255))
    r = c.getresponse(); r.read(); codes[r.status] = codes.get(r.status, 0) + 1
for i in range(500):  # agent reports with made-up tokens
    body = json.dumps({"event": "booted"})
    c.request("POST", "/api/v1/agent/events", body,
              {"Authorization": "Bearer forged-%d" % i, "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); codes[r.status] = codes.get(r.status, 0) + 1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for i in range(300):  # TFTP read requests for files that are not there
    s.sendto(b"\x00\x01no-such-file-%d\x00octet\x00" % i, (host, 69))
    try:
        data, _ = s.recvfrom(600)
        codes["tftp-%d" % data[1]] = codes.get("tftp-%d" % data[1], 0) + 1
    except socket.timeout:
        codes["tftp-timeout"] = codes.get("tftp-timeout", 0) + 1
print(json.dumps(codes))
"""


def _lan(tmp_path, **kw) -> Lan:
    lan = Lan(tmp_path, **kw)
    cfg = json.loads(lan.config.read_text())
    cfg["retention"] = {"anonymous_events_per_minute": BUDGET}
    lan.config.write_text(json.dumps(cfg))
    return lan


def _events(db, kinds: tuple[str, ...]) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        q = f"SELECT kind, count(*) FROM events WHERE kind IN ({','.join('?' * len(kinds))}) GROUP BY kind"
        return dict(conn.execute(q, kinds).fetchall())
    finally:
        conn.close()


def _status(lan: Lan) -> dict:
    r = run_nixie("status", "--json", config=lan.config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_an_anonymous_flood_writes_a_bounded_number_of_rows(tmp_path):
    lan = _lan(tmp_path)
    try:
        lan.client.run("ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
        lan.start()
        r = lan.client.run(sys.executable, "-c", FLOOD, ROUTER, timeout=240)
        codes = json.loads(r.stdout)
        # every request was answered (TFTP: an ERROR packet): the budget limits rows, not service
        assert codes == {"200": 700, "401": 500, "tftp-5": 300}, codes
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            retention = _status(lan)["serve"]["services"]["retention"]["stats"]
            if retention["suppressed"] >= 1500 - 3 * BUDGET:
                break
            time.sleep(0.5)
        rows = _events(lan.db, ("boot.script", "agent.rejected", "boot.tftp"))
        print(f"1500 anonymous requests -> event rows {rows}, "
              f"suppressed {retention['suppressed']}")
        # one source, three kinds: at most the budget of each was written
        assert rows.get("boot.script", 0) <= BUDGET and rows.get("agent.rejected", 0) <= BUDGET
        assert rows.get("boot.tftp", 0) <= BUDGET
        assert sum(rows.values()) >= BUDGET  # the first ones of each minute are written
        assert retention["suppressed"] >= 1500 - 3 * BUDGET  # the rest was counted
        conn = sqlite3.connect(lan.db)
        assert conn.execute("SELECT count(*) FROM boot_tokens").fetchone()[0] == 0
        conn.close()
    finally:
        lan.close()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_serve_makes_the_state_owner_only(tmp_path):
    lan = _lan(tmp_path)
    try:
        state = tmp_path / "state"
        state.mkdir(mode=0o755)
        os.chmod(state, 0o755)
        old = os.umask(0o022)
        try:  # a database an older version (or a copy) left world-readable
            sqlite3.connect(lan.db).execute("CREATE TABLE t (x)").connection.close()
        finally:
            os.umask(old)
        assert _mode(state) == 0o755 and _mode(lan.db) == 0o644
        lan.start()
        assert _mode(state) == 0o700
        for suffix in ("", "-wal", "-shm"):
            assert _mode(f"{lan.db}{suffix}") == 0o600, suffix
        assert "made them owner-only" in lan.log.read_text()
    finally:
        lan.close()


# ------------------------------------------------------------------ a full disk

RENEW_SCRIPT = ("#!/bin/sh\ncase \"$1\" in bound|renew) echo \"$1 $ip\" >> {out};"
                " ip addr replace $ip/24 dev $interface ;; esac\nexit 0\n")


def _lines(path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


def _fill(state) -> None:
    """Leave the filesystem under `state` with no room for the database to grow: the WAL
    copied back and cut to nothing, then every free block taken, then rows written from
    here until SQLite itself says the disk is full."""
    conn = sqlite3.connect(state / "nixie.db", timeout=10)
    try:
        for _ in range(50):
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                break
            time.sleep(0.1)
        fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
                try:
                    while True:
                        os.write(fd, chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for _ in range(10_000):
                conn.execute("INSERT INTO events (ts, kind, message) VALUES (?, 'test.fill', ?)",
                             (time.time(), "x" * 2000))
                conn.commit()
    finally:
        conn.close()
    assert os.statvfs(state).f_bavail == 0


def test_a_full_disk_keeps_renewals_and_refuses_undurable_leases(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "nixie-full-test",
                    str(state)], check=True)
    lan = _lan(tmp_path, lease_seconds=600)
    newcomer = Netns()
    procs: list[subprocess.Popen] = []
    try:
        veth(lan.router, "lan1", newcomer, "eth0")
        lan.router.run("ip", "link", "add", "br0", "type", "bridge")
        # both clients on one LAN: lan0 and lan1 bridged under the router's address
        lan.router.run("ip", "addr", "del", "10.77.0.1/24", "dev", "lan0")
        for port in ("lan0", "lan1"):
            lan.router.run("ip", "link", "set", port, "master", "br0")
        lan.router.run("ip", "addr", "add", "10.77.0.1/24", "dev", "br0")
        lan.router.run("ip", "link", "set", "br0", "up")
        cfg = json.loads(lan.config.read_text())
        cfg["lan"]["interface"] = "br0"
        lan.config.write_text(json.dumps(cfg))
        lan.start()

        sc, out = lan.script("renewing", RENEW_SCRIPT)
        udhcpc = lan.client.popen("udhcpc", "-f", "-i", "eth0", "-s", str(sc), "-t", "10",
                                  "-T", "1", "-A", "1", stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        procs.append(udhcpc)
        deadline = time.monotonic() + 20
        while not _lines(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _lines(out) and _lines(out)[0][0] == "bound", lan.log.read_text()[-2000:]
        address = _lines(out)[0][1]

        _fill(state)
        # the client renews (udhcpc: SIGUSR1) while nothing can be written
        udhcpc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 15
        while len(_lines(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _lines(out)[1:] == [["renew", address]], (_lines(out), lan.log.read_text()[-3000:])
        assert "DISK FULL OR FAILING" in lan.log.read_text()

        # a new client: offered an address, but its lease cannot be written, so no ACK
        r = newcomer.run("udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1",
                         "-s", "/bin/true", check=False, timeout=40)
        assert r.returncode != 0, r.stdout + r.stderr
        assert "lease of" not in r.stdout + r.stderr

        # the warning: /healthz (web workers), `nixie status`, the log
        # (anonymous: not ok only; the details are for admins, and `nixie status` shows them)
        code, body = http_get(lan.router, f"https://{ROUTER}:8080/healthz")
        assert code == 503 and json.loads(body) == {"ok": False}, body
        st = run_nixie("status", config=lan.config)
        assert "WARNING: DISK FULL" in st.stdout, st.stdout + st.stderr
        assert "kept_renewals=1" in lan.log.read_text()

        # room again: the new client gets its lease, and it is on disk
        (state / "filler").unlink()
        conn = sqlite3.connect(state / "nixie.db", timeout=10)
        conn.execute("DELETE FROM events WHERE kind = 'test.fill'")
        conn.commit()
        conn.close()
        r = newcomer.run("udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
                         "-s", "/bin/true", check=False, timeout=40)
        assert r.returncode == 0, r.stdout + r.stderr
        mac = newcomer.run("cat", "/sys/class/net/eth0/address").stdout.strip()
        assert any(row["mac"] == mac and row["state"] == "bound" for row in lan.leases().values())
        assert lan.leases()[address]["state"] == "bound"
    finally:
        stop_processes(procs)
        try:
            lan.close()
        finally:
            newcomer.close()
            subprocess.run(["umount", "-l", str(state)], check=False)


def test_a_full_disk_sends_no_dhcpv6_reply_for_a_lease_it_cannot_store(tmp_path):
    """The DHCPv6 case, with a real full filesystem (not a capped database): the state
    dir on a small tmpfs filled up, a real dhclient -6 is advertised an address and asks
    for it, but no REPLY leaves while its lease cannot be written; once there is room
    again the client is bound and the lease is on disk."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "nixie-full-test6",
                    str(state)], check=True)
    lan = None
    try:
        lan = Lan6(tmp_path)
        lan.start()
        _fill(state)
        _proc, out = lan.dhclient6()
        log = tmp_path / "dhclient6.log"
        deadline = time.monotonic() + 20
        while "XMT: Request" not in (log.read_text() if log.exists() else "") \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # a few Request retransmissions (1 s, 2 s, ...) go unanswered
        text = log.read_text()
        assert "RCV: Advertise" in text and "XMT: Request" in text, text
        assert "RCV: Reply" not in text and "BOUND6" not in (
            out.read_text() if out.exists() else ""), text
        assert not lan.leases6(), lan.leases6()

        # room again: the client's next Request is answered, its lease on disk
        (state / "filler").unlink()
        conn = sqlite3.connect(state / "nixie.db", timeout=10)
        conn.execute("DELETE FROM events WHERE kind = 'test.fill'")
        conn.commit()
        conn.close()
        address = lan.wait_line(out, "BOUND6", timeout=60)[1]
        assert lan.leases6()[address]["state"] == "bound", lan.leases6()
    finally:
        try:
            if lan is not None:
                lan.close()
        finally:
            subprocess.run(["umount", "-l", str(state)], check=False)
