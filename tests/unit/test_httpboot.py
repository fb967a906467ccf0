"""HTTP boot: script rendering, Range parsing, and the WSGI app over a file-backed backend."""

from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netservices.backend import BootTarget, HostRecord, Segment
from netservices.httpboot import BootSettings, create_boot_app, scripts
from netservices.httpboot.streaming import SegmentStream, Unsatisfiable, parse_range
from tests.bootlab import SpecBackend, store_basename
from tests.golden import assert_golden

MAC = "52:54:00:aa:bb:01"
BASE = "http://10.0.0.1:8081"


# ------------------------------------------------------------------ Range
@pytest.mark.parametrize("header,size,want", [
    (None, 10, None), ("bytes=0-", 10, (0, 10)), ("bytes=2-4", 10, (2, 3)),
    ("bytes=-3", 10, (7, 3)), ("bytes=-30", 10, (0, 10)), ("bytes=5-100", 10, (5, 5)),
    ("bytes=1-2,4-5", 10, None), ("items=0-1", 10, None), ("bytes=4-2", 10, None),
    ("bytes=a-b", 10, None), ("bytes=-", 10, None)])
def test_parse_range(header, size, want):
    assert parse_range(header, size) == want


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=99-100", "bytes=-0"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 10)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.integers(1, 10_000))
def test_parse_range_total(header, size):
    try:
        r = parse_range(header, size)
    except Unsatisfiable:
        return
    if r is not None:
        start, n = r
        assert 0 <= start < size and 1 <= n and start + n <= size


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=5), st.data())
def test_segment_stream_matches_concatenation(tmp_path_factory, lengths, data):
    d = tmp_path_factory.mktemp("segs")
    blobs, segs = [], []
    for i, n in enumerate(lengths):
        p = d / f"f{i}"
        raw = os.urandom(n + 7)
        p.write_bytes(raw)
        blobs.append(raw[7:7 + n])
        segs.append(Segment(str(p), 7, n))
    whole = b"".join(blobs)
    start = data.draw(st.integers(0, len(whole)))
    length = data.draw(st.integers(0, len(whole) - start))
    closed = []
    s = SegmentStream(segs, start, length, zero_copy=False, on_close=lambda a, b: closed.append((a, b)))
    assert len(s) == length
    assert b"".join(s) == whole[start:start + length]
    s.close()
    assert closed == [(length, length)]


# ------------------------------------------------------------------ scripts
def test_menu_script_lists_generations_newest_default():
    host = HostRecord("n1", 1, (MAC,), "netboot")
    b1, b2 = store_basename("sys-a"), store_basename("sys-b")
    targets = [BootTarget("/nix/store/" + b2, "generation 2"), BootTarget("/nix/store/" + b1, "generation 1")]
    text = scripts.menu_script(host, targets, BootSettings(BASE, menu_timeout_seconds=7), BASE + "/x",
                               lambda t: "tok" + t.label[-1])
    assert text.startswith("#!ipxe\n")
    assert "choose --timeout 7000 --default gen0" in text
    assert "item --key 1 gen1 [1] generation 1" in text  # rollback: one key
    assert f"kernel {BASE}/boot/{b2}/kernel initrd=initrd init=/nix/store/{b2}/init" in text
    assert "nixie.token=tok2" in text and "nixie.token=tok1" in text
    assert f"initrd --name initrd {BASE}/boot/{b1}/initrd" in text
    assert ":local" in text and "sanboot" in text


def _generations(current: int | None) -> list[BootTarget]:
    return [BootTarget("/nix/store/" + store_basename(f"sys-{n}"), f"generation {n}", number=n,
                       kernel_params=("console=ttyS0",), current=n == current) for n in (3, 2, 1)]


@pytest.mark.parametrize("name,current", [("menu-newest.ipxe", 3), ("menu-no-current.ipxe", None),
                                          ("menu-rollback.ipxe", 2)])
def test_menu_script_golden(name, current):
    """The default entry is the current generation (the admin's rollback choice),
    marked "(current)"; newer generations stay listed."""
    host = HostRecord("n1", 1, (MAC,), "netboot")
    text = scripts.menu_script(host, _generations(current), BootSettings(BASE, menu_timeout_seconds=5,
                               cmdline="quiet"), f"{BASE}/boot/{MAC}.ipxe",
                               lambda t: f"tok{t.number}")
    assert_golden(name, text)


def test_default_target_is_the_current_one_else_the_newest():
    assert scripts.default_target(_generations(1)) == 2
    assert scripts.default_target(_generations(None)) == 0
    assert scripts.default_target([]) == 0


@pytest.mark.parametrize("bad", ["a\nchain http://evil", "x${net0/mac}", "a b", "q\"uote", ""])
def test_unsafe_values_never_reach_a_script(bad):
    with pytest.raises(scripts.UnsafeValue):
        scripts.check_params([bad])


def test_labels_are_sanitised():
    assert "\n" not in scripts.safe_label("evil\nkernel http://x")
    assert "$" not in scripts.safe_label("${x}")


def test_store_basename_checks():
    b = store_basename("ok")
    assert scripts.store_basename("/nix/store/" + b) == b
    for bad in ("/nix/store/../etc", "/etc/passwd", "/nix/store/" + b + "/x", "/nix/store/short-x"):
        with pytest.raises(scripts.UnsafeValue):
            scripts.store_basename(bad)


# ------------------------------------------------------------------ the app, called as WSGI
@pytest.fixture
def lab(tmp_path):
    kernel = tmp_path / "kernel"
    kernel.write_bytes(os.urandom(70_000))
    parts = [tmp_path / "initrd.1", tmp_path / "initrd.2"]
    for p in parts:
        p.write_bytes(os.urandom(50_000))
    b1, b2 = store_basename("nixos-system-n1-1"), store_basename("nixos-system-n1-2")
    sysspec = {"label": "gen", "kernel": str(kernel), "initrd": [str(p) for p in parts],
               "params": ["console=ttyS0", "loglevel=4"]}
    spec = {
        "hosts": [
            {"name": "n1", "id": 1, "macs": [MAC], "mode": "netboot", "targets": [b2, b1]},
            {"name": "inst", "id": 2, "macs": ["52:54:00:aa:bb:02"], "mode": "install", "targets": [b1]},
            {"name": "disk", "id": 3, "macs": ["52:54:00:aa:bb:03"], "mode": "local", "targets": [b1]},
            {"name": "fresh", "id": 4, "macs": ["52:54:00:aa:bb:04"], "mode": "netboot", "targets": []},
        ],
        "systems": {b1: {**sysspec, "label": "generation 1"}, b2: {**sysspec, "label": "generation 2"}},
        "dispatch": {"profile/lab": b1, "configuration/web": b2, "hydra/h/p/j/job": b1},
        "pending": ["profile/building"],
    }
    tftp_root = tmp_path / "tftp"
    tftp_root.mkdir()
    (tftp_root / "ipxe.efi").write_bytes(b"EFI" * 100)
    (tmp_path / "secret").write_text("secret")
    os.symlink(tmp_path / "secret", tftp_root / "escape")
    backend = SpecBackend(spec)

    def cache_app(environ, start_response):
        body = f"cache:{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    def make(**kw):
        s = BootSettings(BASE, **{"menu": False, "retry_seconds": 4, **kw})
        return create_boot_app(hosts=backend, events=backend, artifacts=backend, agent=backend,
                               settings=s, tftp_root=str(tftp_root), mounts={"/nix-cache": cache_app})

    return {"make": make, "backend": backend, "b1": b1, "b2": b2, "kernel": kernel,
            "initrd": b"".join(p.read_bytes() for p in parts)}


def call(app, path, method="GET", headers=None, body=b"", query="", environ=None):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "REMOTE_ADDR": "10.0.0.50", "SCRIPT_NAME": "", "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)), **(environ or {})}
    for k, v in (headers or {}).items():
        environ["HTTP_" + k.upper().replace("-", "_")] = v
    got = {}

    def start_response(status, hdrs):
        got["status"] = int(status.split()[0])
        got["headers"] = dict(hdrs)

    it = app(environ, start_response)
    data = b"".join(it)
    if hasattr(it, "close"):
        it.close()
    return got["status"], got["headers"], data


def test_host_script_netboot_and_events(lab):
    app = lab["make"]()
    status, headers, body = call(app, f"/boot/{MAC.replace(':', '-')}.ipxe")
    text = body.decode()
    assert status == 200 and headers["Cache-Control"] == "no-store"
    b2 = lab["b2"]
    assert (f"kernel {BASE}/boot/{b2}/kernel initrd=initrd init=/nix/store/{b2}/init "
            f"console=ttyS0 loglevel=4 nixie.api={BASE} nixie.token=") in text
    token = text.split("nixie.token=")[1].split()[0]
    assert lab["backend"].tokens[token] == (1, "/nix/store/" + b2)
    ev = [e for e in lab["backend"].events if e["kind"] == "boot.script"][-1]
    assert ev["host_id"] == 1 and ev["mac"] == MAC and ev["ip"] == "10.0.0.50"
    # the kernel fetch that follows lands on the same host's timeline
    call(app, f"/boot/{b2}/kernel")
    kinds = [(e["kind"], e["host_id"], e["data"]["status"]) for e in lab["backend"].events
             if e["kind"] == "boot.kernel"]
    assert kinds == [("boot.kernel", 1, "started"), ("boot.kernel", 1, "completed")]


def test_menu_install_local_pending_unknown(lab):
    app = lab["make"](menu=True, cmdline="quiet")
    text = call(app, f"/boot/{MAC}.ipxe")[2].decode()
    assert "menu Nixie: n1" in text and text.count("nixie.token=") == 2 and " quiet" in text
    text = call(app, "/boot/52:54:00:aa:bb:02.ipxe")[2].decode()
    assert "nixie.mode=install" in text and "menu" not in text
    text = call(app, "/boot/52:54:00:aa:bb:03.ipxe")[2].decode()
    assert "sanboot" in text and "kernel" not in text
    status, _, body = call(app, "/boot/52:54:00:aa:bb:04.ipxe")
    assert status == 200 and "sleep 4" in body.decode()
    assert f"chain --replace --autofree {BASE}/boot/52:54:00:aa:bb:04.ipxe" in body.decode()
    text = call(app, "/boot/52:54:00:ff:ff:ff.ipxe")[2].decode()
    assert "unknown machine" in text and "item local" in text and "item retry" in text
    text = call(lab["make"](unknown_clients="local"), "/boot/52:54:00:ff:ff:ff.ipxe")[2].decode()
    assert "sanboot" in text and "menu" not in text
    assert call(app, "/boot/not-a-mac.ipxe")[0] == 400


def test_artifacts_head_range_etag(lab):
    app = lab["make"]()
    url = f"/boot/{lab['b1']}/initrd"
    whole = lab["initrd"]
    status, h, body = call(app, url)
    assert status == 200 and body == whole and h["Content-Length"] == str(len(whole))
    assert h["Accept-Ranges"] == "bytes" and h["ETag"].startswith('"') and "Last-Modified" in h
    status, h2, body = call(app, url, "HEAD")
    assert status == 200 and body == b"" and h2["Content-Length"] == str(len(whole))
    status, h3, body = call(app, url, headers={"Range": "bytes=49990-50009"})
    assert status == 206 and body == whole[49990:50010]
    assert h3["Content-Range"] == f"bytes 49990-50009/{len(whole)}"
    status, h4, _ = call(app, url, headers={"Range": f"bytes={len(whole)}-"})
    assert status == 416 and h4["Content-Range"] == f"bytes */{len(whole)}"
    assert call(app, url, headers={"If-None-Match": h["ETag"]})[0] == 304
    status, _, body = call(app, url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert status == 200 and body == whole
    assert call(app, f"/boot/{lab['b1']}/kernel")[2] == lab["kernel"].read_bytes()
    assert call(app, f"/boot/{store_basename('unknown')}/kernel")[0] == 404
    assert call(app, "/boot/..%2f..%2fetc/kernel")[0] == 404
    assert call(app, url, "POST")[0] == 405


def test_ipxe_binaries_and_escapes(lab):
    app = lab["make"]()
    status, _, body = call(app, "/ipxe/ipxe.efi")
    assert status == 200 and body == b"EFI" * 100
    status, headers, body = call(app, "/ipxe/ipxe.efi", "HEAD")  # UEFI HTTP Boot asks first
    assert status == 200 and body == b"" and headers["Content-Length"] == "300"
    fetched = [e["data"] for e in lab["backend"].events if e["kind"] == "boot.ipxe"]
    assert fetched[-2:] == [{"file": "ipxe.efi", "method": "GET"},
                            {"file": "ipxe.efi", "method": "HEAD"}]
    for path in ("/ipxe/escape", "/ipxe/..", "/ipxe/%2e%2e", "/ipxe/../../etc/passwd",
                 "/ipxe/nothing.efi"):
        status, _, body = call(app, path)
        assert status in (403, 404) and b"secret" not in body, path


def test_dispatch_kinds(lab):
    app = lab["make"]()
    b1, b2 = lab["b1"], lab["b2"]
    text = call(app, "/dispatch/profile/lab", query="cmdline_prefix_args=quiet+a%3Db&"
                "cmdline_suffix_args=console%3DttyS1")[2].decode()
    assert f"init=/nix/store/{b1}/init quiet a=b console=ttyS0 loglevel=4 console=ttyS1" in text
    assert f"/boot/{b2}/kernel" in call(app, "/dispatch/configuration/web")[2].decode()
    assert f"/boot/{b1}/kernel" in call(app, "/dispatch/hydra/h/p/j/job")[2].decode()
    assert f"/boot/{b1}/kernel" in call(app, f"/boot/{b1}/netboot.ipxe")[2].decode()
    status, _, body = call(app, "/dispatch/profile/building")
    assert status == 200 and "sleep 3" in body.decode() and "chain" in body.decode()
    assert call(app, "/dispatch/profile/none")[0] == 404
    for q in ("cmdline_suffix_args=a%0Achain+http://evil", "cmdline_prefix_args=%24%7Bx%7D"):
        status, _, body = call(app, "/dispatch/profile/lab", query=q)
        assert status == 400 and b"chain http://evil" not in body


def test_agent_api(lab):
    app = lab["make"]()
    text = call(app, f"/boot/{MAC}.ipxe")[2].decode()
    token = text.split("nixie.token=")[1].split()[0]

    def post(body, tok=token, raw=None):
        data = raw if raw is not None else json.dumps(body).encode()
        status, _, out = call(app, "/api/v1/agent/events", "POST", body=data,
                              headers={"Authorization": f"Bearer {tok}"})
        return status, json.loads(out)

    assert post({"event": "booted", "message": "up"}) == (
        200, {"host_id": 1, "state": "booted", "ip": "10.0.0.50"})
    assert post({"event": "booted"}, tok="wrong")[0] == 401
    assert post({"event": "exploded"})[0] == 400
    assert post({"event": "installed"})[0] == 409
    assert post(None, raw=b"{not json")[0] == 400
    assert post(None, raw=b"[1,2]")[0] == 400
    assert post(None, raw=b"x" * (64 * 1024 + 1))[0] == 413
    # the host's SSH key rides along (the sink pins it); anything else in its place is refused
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8AWXzPjMr0AxPMISyi3san7mU05Xctk8zQfDz4Bhyy"
    assert post({"event": "booted", "ssh_host_key": key})[0] == 200
    assert lab["backend"].reports[-1]["ssh_host_key"] == key
    for bad in (["ssh-ed25519"], 42, "ssh-ed25519 " + "A" * 5000, "ssh-ed25519 \ud800"):
        raw = json.dumps({"event": "booted", "ssh_host_key": bad}).encode()
        if isinstance(bad, str) and "\ud800" in bad:
            raw = b'{"event": "booted", "ssh_host_key": "ssh-ed25519 \\ud800"}'
        assert post(None, raw=raw)[0] == 400, bad
    assert call(app, "/api/v1/agent/events")[0] == 405
    status, _, _ = call(app, "/api/v1/agent/events", "POST", body=b"{}")
    assert status == 401


def test_mounts(lab):
    app = lab["make"]()
    assert call(app, "/nix-cache/nix-cache-info")[2] == b"cache:/nix-cache|/nix-cache-info"


@pytest.mark.parametrize("zero_copy", [True, False])
def test_waitress_streams_segments_and_cuts_a_shrunk_file(tmp_path, zero_copy):
    """A real waitress server on loopback: the segments arrive in order; a file that
    is shorter than its segment ends the response (no hang, no busy loop)."""
    import http.client
    import threading

    from netservices.httpboot import make_server

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(os.urandom(3_000_000))
    b.write_bytes(os.urandom(1_000_000))
    good = (Segment(str(a), 5, 2_999_995), Segment(str(b), 0, 1_000_000))
    short = (Segment(str(b), 0, 2_000_000),)  # promises more than b has

    def app(environ, start_response):
        segs = good if environ["PATH_INFO"] == "/good" else short
        size = sum(s.length for s in segs)
        start_response("200 OK", [("Content-Length", str(size))])
        return SegmentStream(segs, zero_copy=zero_copy)

    srv = make_server(app, "127.0.0.1:0", threads=2, zero_copy=zero_copy)
    port = srv.socket.getsockname()[1]
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/good")
        body = conn.getresponse().read()
        assert body == a.read_bytes()[5:] + b.read_bytes()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/short")
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
    finally:
        srv.close()
        th.join(5)


def test_install_and_local_disk_scripts_golden(lab):
    """An install-mode host boots its system with nixie.mode=install and names the
    toplevel the installer puts on the disk (nixie.system); once installed (mode local)
    it gets the boot-from-disk script: BIOS sanboots the first disk, UEFI exits to the
    firmware's next boot entry."""
    app = lab["make"]()
    text = call(app, "/boot/52:54:00:aa:bb:02.ipxe")[2].decode()
    token = text.split("nixie.token=")[1].split()[0]
    assert_golden("install.ipxe", text.replace(token, "TOKEN"))
    assert_golden("local-disk.ipxe", call(app, "/boot/52:54:00:aa:bb:03.ipxe")[2].decode())


BASE6 = "http://[fd00:77::1]:8081"


@pytest.mark.parametrize("client, base", [("fd00:77::1:5", BASE6), ("fe80::5054:ff:fe00:1", BASE6),
                                          ("10.0.0.50", BASE), ("::ffff:10.0.0.50", BASE)])
def test_a_script_fetched_over_ipv6_gives_every_url_in_ipv6(lab, client, base):
    """Issue 16: the family of every URL the host is sent to (kernel, initrd, the script's
    own retry URL, `nixie.api`) is the family its script request came from."""
    app = lab["make"](base_url6=BASE6)
    environ_ip = {"REMOTE_ADDR": client}
    status, _, body = call(app, f"/boot/{MAC}.ipxe", environ=environ_ip)
    text = body.decode()
    b2 = lab["b2"]
    assert status == 200
    assert f"kernel {base}/boot/{b2}/kernel " in text and f" nixie.api={base} " in text, text
    assert f"initrd --name initrd {base}/boot/{b2}/initrd" in text, text
    other = BASE if base == BASE6 else BASE6
    assert other not in text, text
    if client == "fd00:77::1:5":
        token = text.split("nixie.token=")[1].split()[0]
        assert_golden("netboot-ipv6.ipxe", text.replace(token, "TOKEN"))
    # a host still waiting for its system is told to retry at the same family's URL
    status, _, body = call(app, "/boot/52:54:00:aa:bb:04.ipxe", environ=environ_ip)
    assert f"{base}/boot/52:54:00:aa:bb:04.ipxe" in body.decode(), body.decode()


def test_without_an_ipv6_url_ipv6_clients_get_the_configured_one(lab):
    app = lab["make"]()  # boot.public_url set, or HTTP boot not on IPv6
    _, _, body = call(app, f"/boot/{MAC}.ipxe", environ={"REMOTE_ADDR": "fd00:77::1:5"})
    assert f"nixie.api={BASE} " in body.decode()
def test_counters_and_a_missing_kernel_on_the_timeline(lab):
    """What /metrics exports for HTTP boot: responses by route and status, transfers and
    their bytes; a kernel that is not there is an error on the host's timeline."""
    app = lab["make"]()
    call(app, f"/boot/{MAC}.ipxe")
    call(app, f"/boot/{lab['b2']}/kernel")
    call(app, f"/boot/{lab['b2']}/initrd", headers={"Range": "bytes=0-99"})
    call(app, "/boot/..%2f..%2fetc/kernel")
    call(app, "/ipxe/ipxe.efi")
    call(app, "/nothing-here")
    st = app.stats()
    assert st["responses"] == {"script 200": 1, "kernel 200": 1, "initrd 206": 1,
                               "kernel 404": 1, "ipxe 200": 1, "other 404": 1}
    size = lab["kernel"].stat().st_size
    assert st["transfers"] == {"kernel completed": 1, "initrd completed": 1,
                               "ipxe completed": 1}
    assert st["bytes_sent"] == {"kernel": size, "initrd": 100, "ipxe": 300}
    missing = store_basename("nixos-system-gone")
    assert call(app, f"/boot/{missing}/kernel")[0] == 404
    ev = lab["backend"].events[-1]
    assert ev["kind"] == "boot.kernel" and ev["level"] == "error"
    assert ev["data"]["status"] == "missing"
