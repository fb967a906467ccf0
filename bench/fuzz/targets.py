"""What the fuzz bench feeds, per protocol: seed inputs, a generator, and the code a
server loop runs on one input, in-process.

Each target parses with the pure codec (to count parsed vs rejected) and then
hands the same input to the engine or handler the real server loop calls:

- dhcp:  codec.parse (+ every accessor, build round trip), AuthoritativeEngine.handle
         (pool, leases, PXE answers, conflict probe) and ProxyEngine.handle on 67 and 4011;
- tftp:  codec.parse_request, TftpServer._handle_request (path policy, option
         negotiation, error replies, transfers on loopback sockets), then the ACK
         stream of any transfer it started (_on_packet, _check_timeouts);
- dns:   wire.parse_query, Resolver.handle over a zone rebuilt from fuzzed DHCP
         host names (UDP and TCP paths), and for forwarded queries a mutated upstream
         reply through ForwardCache.put/get;
- http:  the HTTP boot WSGI app (paths, query strings, Range/If-Range/If-None-Match)
         over the file-backed boot backend, bodies streamed to the end;
- agent: POST /api/v1/agent/events on the same app over the appliance's SQLite
         backend (Authorization, Content-Length, JSON body), real tokens and hosts.

`run(inp)` returns True (accepted), False (rejected: dropped and counted) or raises:
any exception is a crash, and so is an answer no client can use (a reply the
codec cannot read, a DNS answer with another ID, an HTTP 5xx other than 503).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import struct
from pathlib import Path
from typing import Any

from appliance.domain import agent, hosts
from appliance.domain.boot_backend import SqliteBackend
from appliance.state import db
from netservices.dhcp import codec as dhcp_codec
from netservices.dhcp.engine import AuthoritativeEngine, DhcpSettings, ProxyEngine
from netservices.dhcp.store import HostEntry
from netservices.dns import wire
from netservices.dns.resolver import FORWARD, Resolver
from netservices.dns.zone import build_zone
from netservices.httpboot import BootSettings, create_boot_app
from netservices.tftp import codec as tftp_codec
from netservices.tftp.server import MAX_RETRIES, TftpServer
from tests.bootlab import SpecBackend, store_basename
from tests.dhcp_helpers import DATA, client_packet, pcap_udp_payloads

from .mutate import mutate, mutate_text

T0 = 1_700_000_000.0


class BadAnswer(AssertionError):
    """The handler answered, but with something no client could use."""


def _stable_rng(data: bytes) -> random.Random:
    """A generator seeded by the input itself, so a saved input replays the same way."""
    return random.Random(hashlib.sha256(data).digest())


class Target:
    name = ""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def reset(self, rng: random.Random) -> None:
        """Fresh server state (once per chunk of inputs)."""

    def generate(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def run(self, inp: Any) -> bool:
        raise NotImplementedError

    def encode(self, inp: Any) -> bytes:
        return inp

    def decode(self, raw: bytes) -> Any:
        return raw

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- DHCP
LAN_PREFIX = "10.77.0."
MACS = ("52:54:00:12:34:56", "52:54:00:00:00:01", "bc:24:11:00:00:02")


def dhcp_seeds() -> list[bytes]:
    seeds = [p for f in sorted(DATA.glob("*.pcap")) for _, _, p in pcap_udp_payloads(f)]
    sid = dhcp_codec.ip_bytes(LAN_PREFIX + "1")
    ip = dhcp_codec.ip_bytes(LAN_PREFIX + "120")
    for mac in MACS[:2]:
        seeds += [
            client_packet(dhcp_codec.DECLINE, mac, opt50=ip, opt54=sid),
            client_packet(dhcp_codec.RELEASE, mac, ciaddr=LAN_PREFIX + "120", opt54=sid),
            client_packet(dhcp_codec.INFORM, mac, ciaddr=LAN_PREFIX + "130"),
            client_packet(dhcp_codec.REQUEST, mac, opt50=ip, opt12=b"db1"),  # INIT-REBOOT
            client_packet(dhcp_codec.REQUEST, mac, ciaddr=LAN_PREFIX + "120"),  # RENEWING
            client_packet(dhcp_codec.DISCOVER, mac, giaddr=LAN_PREFIX + "254",
                          opt82=b"\x01\x04port\x02\x06remote"),
            client_packet(dhcp_codec.DISCOVER, mac, opt60=b"PXEClient:Arch:00007:UNDI:003016",
                          opt93=b"\x00\x07", opt94=b"\x01\x03\x10", opt97=bytes(17)),
            client_packet(dhcp_codec.REQUEST, mac, opt77=b"iPXE", opt175=b"\x13\x01\x01",
                          opt50=ip, opt54=sid),
            client_packet(dhcp_codec.DISCOVER, mac, opt60=b"HTTPClient:Arch:00016",
                          opt93=b"\x00\x10", opt61=b"\x01" + bytes(6)),
            client_packet(dhcp_codec.DISCOVER, mac, opt52=b"\x03", opt12=b"wpad"),
        ]
    return seeds


class DhcpTarget(Target):
    name = "dhcp"

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.seeds = dhcp_seeds()

    def reset(self, rng: random.Random) -> None:
        unknown = rng.choice(("menu", "local", "ignore"))
        auth = DhcpSettings(mode="authoritative", interface="lan0", server_ip=LAN_PREFIX + "1",
                            prefix=24, range_first=LAN_PREFIX + "100",
                            range_last=LAN_PREFIX + "160", lease_seconds=rng.choice((60, 3600)),
                            dns_servers=(LAN_PREFIX + "1",), domain="lan",
                            unknown_clients=unknown, boot_base_url="http://10.77.0.1:8081",
                            conflict_check=rng.random() < 0.5)
        entries = {MACS[0]: HostEntry(1, "node1", "netboot", LAN_PREFIX + "110"),
                   MACS[1]: HostEntry(2, "db1", "install"),
                   MACS[2]: HostEntry(3, "local1", "local", LAN_PREFIX + "111")}
        self.engine = AuthoritativeEngine(auth, decline_quarantine=30.0)
        self.engine.set_hosts(entries)
        if auth.conflict_check:
            self.engine.probe = lambda ip: ip.endswith("7")  # a few addresses "answer a ping"
        self.proxy = ProxyEngine(DhcpSettings(
            mode="proxy", interface="lan0", server_ip=LAN_PREFIX + "1", prefix=24,
            range_first=LAN_PREFIX + "100", range_last=LAN_PREFIX + "160",
            unknown_clients=unknown, boot_base_url="http://10.77.0.1:8081"))
        self.proxy.set_hosts(entries)
        self.now = T0
        self.count = 0

    def generate(self, rng: random.Random) -> bytes:
        return mutate(rng, self.seeds, max_len=1500)

    @staticmethod
    def _check_replies(replies) -> None:
        for r in replies:
            p = dhcp_codec.parse(r.payload)  # a reply our own codec cannot read is a bug
            if p.op != dhcp_codec.BOOTREPLY or p.message_type is None:
                raise BadAnswer(f"reply is not a DHCP answer: {r.payload[:64].hex()}")

    def run(self, data: bytes) -> bool:
        try:
            p = dhcp_codec.parse(data)
        except dhcp_codec.MalformedPacket:
            ok = False
        else:
            ok = True
            _ = (p.message_type, p.client_id, p.hostname, p.client_arch, p.user_classes, p.uuid,
                 p.requested_ip, p.server_id, p.mac_str)
            try:
                _ = p.relay_agent_info
            except dhcp_codec.MalformedPacket:
                pass
            dhcp_codec.parse(dhcp_codec.build(p))  # anything accepted can be written back
        self.count += 1
        self.now += 0.05 + (self.count % 97) * 0.5  # leases and offers expire as it runs
        self._check_replies(self.engine.handle(data, self.now))
        self._check_replies(self.proxy.handle(data, self.now))
        self._check_replies(self.proxy.handle(data, self.now, port=4011,
                                              src=(LAN_PREFIX + "150", 68)))
        if self.count % 32 == 0:  # the server loop's group commit
            self.engine.take_dirty(self.now)
            self.proxy.pending_events.clear()
        return ok


# ---------------------------------------------------------------------------- TFTP
def tftp_request(name: bytes, mode: bytes = b"octet", op: int = 1, **options: str) -> bytes:
    out = struct.pack("!H", op) + name + b"\0" + mode + b"\0"
    for k, v in options.items():
        out += k.encode() + b"\0" + v.encode() + b"\0"
    return out


TFTP_SEEDS = [
    tftp_request(b"ipxe.efi"),
    tftp_request(b"ipxe.efi", blksize="1468", tsize="0"),
    tftp_request(b"undionly.kpxe", blksize="8", windowsize="4", timeout="1"),
    tftp_request(b"undionly.kpxe", timeout="255", windowsize="64", blksize="65464"),
    tftp_request(b"empty", tsize="0"),
    tftp_request(b"boot/x.cfg", mode=b"netascii"),
    tftp_request(b"../../etc/passwd"),
    tftp_request(b"/etc/passwd"),
    tftp_request(b"escape"),
    tftp_request(b"boot\\..\\..\\x"),
    tftp_request(b"ipxe.efi", op=2),
    tftp_request(b"ipxe.efi", mode=b"OCTET", blksize="-1", tsize="x", windowsize="0"),
    struct.pack("!HH", 4, 0), struct.pack("!HH", 3, 1) + b"data",
    struct.pack("!HH", 5, 1) + b"nope\0", b"\x00\x06blksize\x001024\x00",
]


class TftpTarget(Target):
    """The request path of the real server loop, with transfers on loopback sockets."""

    name = "tftp"
    MAX_STEPS = 400  # ACKs fed to one transfer

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        root = workdir / "tftp"
        (root / "boot").mkdir(parents=True, exist_ok=True)
        (root / "ipxe.efi").write_bytes(os.urandom(3000))
        (root / "undionly.kpxe").write_bytes(os.urandom(700))
        (root / "empty").write_bytes(b"")
        (root / "boot" / "x.cfg").write_bytes(b"#!ipxe\n")
        if not (root / "escape").is_symlink():
            (root / "escape").symlink_to("/etc/hostname")
        self.root = root
        # a client that listens (its buffer just fills) and a port nobody listens on
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setblocking(False)
        gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gone.bind(("127.0.0.1", 0))
        self.gone_port = gone.getsockname()[1]
        gone.close()
        self.server: TftpServer | None = None

    def reset(self, rng: random.Random) -> None:
        if self.server is not None:
            self.server.close()
        self.server = TftpServer(str(self.root), [], max_transfers=rng.choice((1, 8, 1024)))
        self.server.bind()  # epoll only: no listener, requests are handed in directly
        self.now = T0

    def generate(self, rng: random.Random) -> bytes:
        return mutate(rng, TFTP_SEEDS, max_len=600)

    def _drive(self, srv: TftpServer, rng: random.Random) -> None:
        """What the client side of every transfer sends: mostly the right ACKs, some junk,
        then silence until the retransmissions give up."""
        for _ in range(self.MAX_STEPS):
            if not srv.transfers:
                break
            for t in list(srv.transfers.values()):
                roll = rng.random()
                if roll < 0.8:
                    pkt = struct.pack("!HH", 4, (t.sent_upto if t.oack is None else 0) & 0xFFFF)
                elif roll < 0.9:
                    pkt = struct.pack("!HH", 4, rng.randrange(65536))
                elif roll < 0.97:
                    pkt = rng.randbytes(rng.randrange(8))
                else:
                    pkt = struct.pack("!HH", 5, 0) + b"abort\0"
                self.now += 0.001
                srv._on_packet(t, pkt, self.now)
            if rng.random() < 0.05:
                break  # the client falls silent
        for _ in range(MAX_RETRIES + 2):
            if not srv.transfers:
                break
            self.now += 300.0
            srv._check_timeouts(self.now)
        if srv.transfers:
            raise BadAnswer(f"{len(srv.transfers)} transfer(s) never timed out")

    def run(self, data: bytes) -> bool:
        try:
            tftp_codec.parse_request(data)
            ok = True
        except tftp_codec.MalformedPacket:
            ok = False
        srv = self.server
        assert srv is not None
        rng = _stable_rng(data)
        port = self.sink.getsockname()[1] if rng.random() < 0.7 else self.gone_port
        refused = srv.counters["refused"]
        self.now += 0.01
        srv._handle_request(data, ("127.0.0.1", port), "127.0.0.1", self.now)
        if srv.counters["refused"] != refused:
            ok = False
        self._drive(srv, rng)
        try:
            while True:
                self.sink.recv(65536)
        except BlockingIOError:
            pass
        return ok

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.sink.close()


# ---------------------------------------------------------------------------- DNS
def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".") if x) + b"\0"


def dns_query(name: str, qtype: int = wire.A, *, qid: int = 0x1234, flags: int = wire.RD,
              edns: int | None = None, extra: bytes = b"", arcount: int = 0) -> bytes:
    ar = arcount + (1 if edns is not None else 0)
    out = wire.HEADER.pack(qid, flags, 1, 0, 0, ar) + dns_name(name) + struct.pack("!HH", qtype, 1)
    out += extra
    if edns is not None:
        out += wire.opt_record(edns)
    return out


DNS_QUERY_SEEDS = [
    dns_query("node1.lan"), dns_query("node1.lan", wire.AAAA), dns_query("NoDe1.LaN", edns=1232),
    dns_query("wpad.lan"), dns_query("missing.lan", wire.ANY), dns_query("lan", wire.SOA),
    dns_query("10.0.77.10.in-addr.arpa", wire.PTR), dns_query("99.0.77.10.in-addr.arpa", wire.PTR),
    dns_query("example.com"), dns_query("example.com", edns=65535),
    dns_query("example.com", flags=wire.RD | (2 << 11)),  # opcode STATUS
    dns_query("a.example", extra=b"\xc0\x0c" + struct.pack("!HHIH", wire.A, 1, 0, 4) + bytes(4),
              arcount=1),
    wire.HEADER.pack(1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",
]


def dns_reply(query: bytes, answers: list[tuple[int, bytes]], rcode: int = 0, tc: bool = False
              ) -> bytes:
    """An upstream answer to `query` (question copied), answers as (type, rdata)."""
    q = wire.parse_query(query)
    flags = wire.QR | wire.RD | wire.RA | rcode | (wire.TC if tc else 0)
    out = wire.HEADER.pack(q.id, flags, 1, len(answers), 0, 0) + q.question
    for rtype, rdata in answers:
        out += wire.rr(rtype, 300, rdata)
    return out


class DnsTarget(Target):
    name = "dns"
    CLIENTS = ("10.77.0.50", "127.0.0.1", "192.0.2.9", "::1", "not-an-ip")
    NAME_SEEDS = ["node1", "db1", "wpad", "isatap", "localhost", "web-1.example", "x" * 70,
                  "Ä-umlaut", "a.b.c", "-dash-", "127", ""]

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        fwd = dns_query("example.com")
        self.reply_seeds = [
            dns_reply(fwd, [(wire.A, bytes([93, 184, 216, 34]))]),
            dns_reply(fwd, [(wire.A, bytes(4)), (wire.AAAA, bytes(16)),
                            (5, dns_name("alias.example.net"))]),
            dns_reply(fwd, [], rcode=wire.NXDOMAIN),
            dns_reply(fwd, [], tc=True),
            dns_reply(fwd, [(wire.SOA, dns_name("ns.example") + dns_name("h.example")
                             + struct.pack("!IIIII", 1, 2, 3, 4, 5))]),
        ]

    def reset(self, rng: random.Random) -> None:
        self.resolver = Resolver.create("lan", "10.77.0.0/24", upstreams=["10.0.0.53"])
        self.now = T0
        self.count = 0
        self._rebuild_zone(rng)

    def _rebuild_zone(self, rng: random.Random) -> None:
        """As DNS does every few seconds: names as DHCP clients sent them, next to hosts'."""
        records = [("node1", "10.77.0.10"), ("db1", "10.77.0.11")]
        for _ in range(rng.randrange(30)):
            name = mutate_text(rng, self.NAME_SEEDS, max_len=100, random_share=0.2)
            ip = rng.choice((f"10.77.0.{rng.randrange(256)}", "999.1.1.1", "::1", "", "x"))
            records.append((name, ip))
        self.resolver.zone = build_zone("lan", records, network="10.77.0.0/24")

    def generate(self, rng: random.Random) -> bytes:
        self.count += 1
        if self.count % 2000 == 0:
            self._rebuild_zone(rng)
        return mutate(rng, DNS_QUERY_SEEDS, max_len=700)

    def _check(self, query: bytes, out) -> None:
        if out is None or out[0] is FORWARD:
            return
        if len(out) < 12 or out[:2] != query[:2] or not out[2] & 0x80:
            raise BadAnswer(f"answer does not answer the query: {bytes(out[:16]).hex()}")

    def run(self, data: bytes) -> bool:
        try:
            wire.parse_query(data)
            ok = True
        except wire.Malformed:
            ok = False
        rng = _stable_rng(data)
        self.now += 0.25
        client = rng.choice(self.CLIENTS)
        tcp = rng.random() < 0.2
        out = self.resolver.handle(data, client, self.now, tcp=tcp)
        if type(out) is tuple and out[0] is FORWARD:
            q = out[1]
            # the upstream's reply, mutated: a broken or forged upstream answer
            base = rng.choice(self.reply_seeds)
            seed = base[:2] + base[2:12] + q.question + base[12 + len(dns_name("example.com")) + 4:]
            reply = mutate(rng, [seed], max_len=1500, random_share=0.05)
            self.resolver.cache.put((q.key, q.qtype, q.qclass), reply, self.now)
            hit = self.resolver.cache.get(q, self.now + rng.random() * 400,
                                          None if tcp else q.udp_limit())
            if hit is not None and (hit[:2] != struct.pack("!H", q.id) or not hit[2] & 0x80):
                raise BadAnswer(f"cached answer with the wrong ID: {hit[:16].hex()}")
            return ok
        if out is not None:
            self._check(data, out)
        return ok


# ---------------------------------------------------------------------------- HTTP boot
SYS_A, SYS_B = store_basename("nixos-system-node1-a"), store_basename("nixos-system-node1-b")
HTTP_PATHS = [
    f"/boot/{MACS[0]}.ipxe", "/boot/52-54-00-00-00-01.ipxe", "/boot/525400aabbcc.ipxe",
    f"/boot/{MACS[2]}.ipxe", "/boot/zz:zz:zz:zz:zz:zz.ipxe",
    f"/boot/{SYS_A}/kernel", f"/boot/{SYS_A}/initrd", f"/boot/{SYS_B}/initrd",
    f"/boot/{SYS_A}/netboot.ipxe", f"/boot/{'0' * 32}-x/kernel",
    "/dispatch/profile/demo", "/dispatch/profile/building", "/dispatch/configuration/node1",
    "/dispatch/hydra/h/p/j/job", "/ipxe/ipxe.efi", "/ipxe/../../etc/passwd", "/ipxe/escape",
    "/api/v1/agent/events", "/", "//boot//x.ipxe",
]
HTTP_QUERIES = ["", "cmdline_prefix_args=console%3DttyS0&cmdline_suffix_args=quiet",
                "cmdline_prefix_args=a$b", "cmdline_suffix_args=%0aimgexec+x", "x=1&x=2;y"]
RANGES = ["", "bytes=0-", "bytes=5-10", "bytes=-100", "bytes=1-2,3-4", "bytes=99999-",
          "bytes=-0", "bytes=10-5", "items=0-1", "bytes=\xb2-", "bytes=1-\xb9", "bytes= 0 - 1 "]
METHODS = ["GET"] * 14 + ["HEAD"] * 3 + ["POST", "PUT", "OPTIONS", "get"]


def http_spec(workdir: Path) -> dict:
    files = workdir / "http"
    files.mkdir(parents=True, exist_ok=True)
    for n in ("kernel", "initrd1", "initrd2"):
        (files / n).write_bytes(os.urandom(2048))
    system = {"kernel": str(files / "kernel"), "params": ["console=ttyS0"],
              "initrd": [str(files / "initrd1"), str(files / "initrd2")]}
    return {"hosts": [{"name": "node1", "id": 1, "macs": [MACS[0]], "mode": "netboot",
                       "targets": [SYS_B, SYS_A]},
                      {"name": "db1", "id": 2, "macs": [MACS[1]], "mode": "install",
                       "targets": [SYS_A]},
                      {"name": "local1", "id": 3, "macs": [MACS[2]], "mode": "local"}],
            "systems": {SYS_A: {**system, "label": "generation 1"},
                        SYS_B: {**system, "label": "generation 2 <b>$x</b>"}},
            "dispatch": {"profile/demo": SYS_A, "configuration/node1": SYS_B},
            "pending": ["profile/building"]}


def _start_response(box: list):
    def start_response(status, headers, exc_info=None):
        box.append((status, headers))
        return lambda data: None
    return start_response


def call_wsgi(app, environ: dict) -> int:
    """Run one request to the end (the body fully iterated and closed); the status code."""
    box: list = []
    body = app(environ, _start_response(box))
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if not box:
        raise BadAnswer("the app returned without start_response")
    return int(box[-1][0].split()[0])


def environ_for(method: str, path: str, query: str, headers: dict[str, str], body: bytes = b"",
                remote: str = "10.77.0.50") -> dict:
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
           "SCRIPT_NAME": "", "SERVER_NAME": "10.77.0.1", "SERVER_PORT": "8081",
           "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": remote, "wsgi.url_scheme": "http",
           "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
           "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False}
    for k, v in headers.items():
        if k == "Content-Length":
            env["CONTENT_LENGTH"] = v
        elif k == "Content-Type":
            env["CONTENT_TYPE"] = v
        else:
            env["HTTP_" + k.upper().replace("-", "_")] = v
    return env


def check_status(status: int) -> bool:
    """Accepted (2xx/3xx) or rejected (4xx); a 5xx other than 503 (retry later) is a crash."""
    if status >= 500 and status != 503:
        raise BadAnswer(f"HTTP {status}")
    return status < 400


class HttpBootTarget(Target):
    name = "http"

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        tftp = workdir / "http-tftp"
        tftp.mkdir(parents=True, exist_ok=True)
        (tftp / "ipxe.efi").write_bytes(os.urandom(1500))
        if not (tftp / "escape").is_symlink():
            (tftp / "escape").symlink_to("/etc/hostname")
        self.tftp_root = str(tftp)
        self.spec = http_spec(workdir)

    def reset(self, rng: random.Random) -> None:
        self.backend = SpecBackend(self.spec)
        menu = rng.random() < 0.5
        settings = BootSettings("http://10.77.0.1:8081", menu=menu,
                                menu_timeout_seconds=rng.choice((0, 5)),
                                cmdline=rng.choice((None, "quiet")),
                                unknown_clients=rng.choice(("menu", "local", "ignore")))
        self.app = create_boot_app(hosts=self.backend, events=self.backend,
                                   artifacts=self.backend, agent=self.backend,
                                   settings=settings, tftp_root=self.tftp_root, zero_copy=False)

    def generate(self, rng: random.Random) -> dict:
        headers = {}
        if rng.random() < 0.5:
            headers["Range"] = mutate_text(rng, RANGES, max_len=60, random_share=0.05)
        if rng.random() < 0.15:
            headers["If-Range"] = mutate_text(rng, ['"abc"', "Thu, 01 Jan 1970 00:00:00 GMT"], 60)
        if rng.random() < 0.15:
            headers["If-None-Match"] = mutate_text(rng, ['*', '"x", "y"', 'W/"z"'], 60)
        return {"method": rng.choice(METHODS) if rng.random() < 0.95
                else mutate_text(rng, METHODS, 12),
                "path": mutate_text(rng, HTTP_PATHS, max_len=300) if rng.random() < 0.6
                else rng.choice(HTTP_PATHS),
                "query": mutate_text(rng, HTTP_QUERIES, max_len=300) if rng.random() < 0.4 else "",
                "headers": headers}

    def run(self, inp: dict) -> bool:
        if len(self.backend.events) > 1000:
            self.backend.events.clear()
        env = environ_for(inp["method"], inp["path"], inp["query"], inp["headers"])
        return check_status(call_wsgi(self.app, env))

    def encode(self, inp: dict) -> bytes:
        return json.dumps(inp).encode()

    def decode(self, raw: bytes) -> dict:
        return json.loads(raw)


# ---------------------------------------------------------------------------- agent
AGENT_BODIES = [
    b'{"event": "booted", "message": "up"}', b'{"event": "installing"}',
    b'{"event": "installed", "message": ""}', b'{"event": "failed", "message": "disk"}',
    b'{"event": "exploded"}', b'{"event": 1}', b'{"message": null}', b'[]', b'"x"', b'null',
    b'{"event": "booted", "message": "\\ud800\\u0000\\u00e9"}', b'{"event": "booted", "x": 1e999}',
    b'{"event": "booted", "event": "failed"}', b'\xef\xbb\xbf{"event": "booted"}',
    b'{"event": "booted", "message": ' + b'[' * 200 + b']' * 200 + b'}',
]


def issue_agent_token(conn, host_id: int, purpose: str = "netboot",
                      generation_id: int | None = None) -> str:
    """A real per-boot token for a host, as a boot script fetched from 10.77.0.50 carries it."""
    return agent.issue_token(conn, host_id, generation_id, client_ip="10.77.0.50",
                             purpose=purpose, ttl_seconds=3600)


class AgentTarget(Target):
    """The agent endpoint of the HTTP boot app over the appliance's SQLite backend."""

    name = "agent"
    # mostly the address the tokens were issued to, so reports get past the address check
    SOURCES = ("10.77.0.50",) * 9 + ("10.77.0.51", "192.0.2.1", "")

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.chunks = 0
        self.store: db.Store | None = None

    def reset(self, rng: random.Random) -> None:
        self._drop_store()
        self.chunks += 1
        self.db_path = self.workdir / f"agent-{self.chunks}.db"
        self.store = db.Store(self.db_path)
        conn = self.store.conn()
        self.tokens = []
        for i, mode in enumerate(("netboot", "install", "local")):
            h = hosts.add_host(conn, f"node{i}", [MACS[i]], "/srv/fleet", mode=mode)
            # a token per generation (as a boot menu carries them): each moves only forward
            for number in range(1, 9):
                gen = conn.execute("INSERT INTO generations (host_id, number, toplevel, "
                                   "created_at) VALUES (?, ?, '/nix/store/x', 0)",
                                   (h["id"], number)).lastrowid
                self.tokens.append(issue_agent_token(
                    conn, h["id"], "install" if mode == "install" else "netboot", gen))
        backend = SqliteBackend(self.store)
        self.app = create_boot_app(hosts=backend, events=backend, artifacts=None, agent=backend,
                                   settings=BootSettings("http://10.77.0.1:8081"),
                                   tftp_root=str(self.workdir), zero_copy=False)

    def generate(self, rng: random.Random) -> dict:
        roll = rng.random()
        if roll < 0.02:  # deep nesting, up to the 64 KiB the endpoint reads
            depth = rng.choice((100, 1000, 30_000))
            body = b'{"event": "booted", "message": ' + b"[" * depth + b"]" * depth + b"}"
        elif roll < 0.1:  # well-formed reports: the token state machine is exercised
            body = rng.choice(AGENT_BODIES[:4])
        else:
            body = mutate(rng, AGENT_BODIES, max_len=2000, random_share=0.05)
        token = rng.choice(self.tokens)
        auth = (f"Bearer {token}" if rng.random() < 0.5 else
                rng.choice((f"bearer  {token} ", "Bearer x", "Basic abc", "", "Bearer " + "A" * 300)))
        if rng.random() < 0.1:
            auth = mutate_text(rng, [auth or "Bearer"], 400)
        elif rng.random() < 0.25 and body.startswith(b"{") and b'"token"' not in body:
            # wget's way: no header, the token as the body's "token" member
            auth = ""
            body = b'{"token": "' + token.encode() + b'", ' + body[1:]
        length = rng.choice((str(len(body)),) * 8 + ("", "-1", "abc", "70000", "1e3",
                                                     str(len(body) + 10), "0", "\xb2"))
        return {"auth": auth, "length": length, "body": body.decode("latin-1"),
                "remote": rng.choice(self.SOURCES)}

    def run(self, inp: dict) -> bool:
        headers = {"Content-Type": "application/json", "Content-Length": inp["length"]}
        if inp["auth"]:
            headers["Authorization"] = inp["auth"]
        env = environ_for("POST", "/api/v1/agent/events", "", headers,
                          inp["body"].encode("latin-1"), remote=inp["remote"])
        return check_status(call_wsgi(self.app, env))

    def encode(self, inp: dict) -> bytes:
        return json.dumps(inp).encode()

    def decode(self, raw: bytes) -> dict:
        return json.loads(raw)

    def _drop_store(self) -> None:
        if self.store is not None:
            self.store.conn().close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.db_path) + suffix).unlink(missing_ok=True)
            self.store = None

    def close(self) -> None:
        self._drop_store()


TARGETS: dict[str, type[Target]] = {t.name: t for t in (DhcpTarget, TftpTarget, DnsTarget,
                                                         HttpBootTarget, AgentTarget)}
PROTOCOLS = tuple(TARGETS)
