"""`nixie backup` / `nixie restore` through the real CLI on real state directories, and
restores of crafted archives (path traversal, links, huge members, a newer schema, a
running serve, altered bytes) that must be refused with nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest

from appliance.domain import apitokens, users
from appliance.errors import Conflict, InvalidInput
from appliance.state import backup, db
from appliance.state.db import Store
from appliance.state.status import write_status
from tests.conftest import run_nixie, write_config

pytestmark = pytest.mark.unit

SECRETS = {  # state_dir-relative file -> bytes, as the services write them (0600)
    "secret_key": os.urandom(32),
    "setup_code": b"123456\n",
    "tls/key.pem": b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n",
    "tls/cert.pem": b"-----BEGIN CERTIFICATE-----\nxyz\n-----END CERTIFICATE-----\n",
    "binary-cache/secret": b"nixie-router-1:c2VjcmV0\n",
    "flakes/1/access-token": b"ghp_notreally\n",
    "bmc-secrets/3": b"bmc-password",
    "vpn/server.key": b"wg-private-key=\n",
    "logs/build-1.log": b"# build 1 of web1\n",
}


def config(tmp_path: Path, name: str) -> Path:
    return write_config(tmp_path / f"{name}.json", tmp_path / name / "state")


def state_of(path: Path) -> Path:
    return Path(json.loads(path.read_text())["state_dir"])


@pytest.fixture
def router(tmp_path):
    """A router state: hosts, a generation, a user with an API token, keys in files."""
    cfg = config(tmp_path, "old")
    assert run_nixie("host", "add", "web1", "--mac", "bc:24:11:00:00:01", "--flake",
                     "github:me/infra", config=cfg).returncode == 0
    state = state_of(cfg)
    store = Store(state / "nixie.db")
    conn = store.conn()
    uid = users.create_user(conn, "admin", "correct horse battery")
    _tok, secret = apitokens.create_token(conn, uid, "ci")
    host_id = conn.execute("SELECT id FROM hosts WHERE name = 'web1'").fetchone()[0]
    conn.execute("INSERT INTO builds (host_id, host_name, flake, attr, status, queued_at, log_path) "
                 "VALUES (?, 'web1', 'github:me/infra', 'web1', 'succeeded', 1, ?)",
                 (host_id, str(state / "logs/build-1.log")))
    conn.execute("INSERT INTO generations (host_id, number, build_id, toplevel, gc_root, created_at) "
                 "VALUES (?, 1, 1, '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1', ?, 1)",
                 (host_id, str(state / "gcroots/web1-build-1")))
    conn.execute("UPDATE hosts SET current_generation = 1 WHERE id = ?", (host_id,))
    store.close()
    for rel, data in SECRETS.items():
        p = state / rel
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        p.write_bytes(data)
        p.chmod(0o600)
    (state / "cpio-cache").mkdir()
    (state / "cpio-cache/x.cpio.zst").write_bytes(b"cache, not state")
    (state / "gcroots").mkdir()
    os.symlink("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1", state / "gcroots/web1-build-1")
    return {"cfg": cfg, "state": state, "token": secret}


def cli_json(*args, config):
    r = run_nixie(*args, "--json", config=config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_backup_then_restore_into_an_empty_state_dir(router, tmp_path):
    archive = tmp_path / "router.tar.gz"
    r = run_nixie("backup", str(archive), "--json", config=router["cfg"])
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    made = json.loads(r.stdout)
    assert made["schema_version"] == db.SCHEMA_VERSION and made["files"] == len(SECRETS) + 1

    new_cfg = config(tmp_path, "new")
    new_state = state_of(new_cfg)
    r = run_nixie("restore", str(archive), "--json", config=new_cfg)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["previous"] is None and out["state_dir"] == str(new_state)

    for rel, data in SECRETS.items():  # the bytes and the mode of every key
        p = new_state / rel
        assert p.read_bytes() == data, rel
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, rel
    assert stat.S_IMODE(new_state.stat().st_mode) == 0o700
    assert not (new_state / "cpio-cache").exists()  # a cache, not state
    # the rows, as the CLI shows them
    for verb in (("host", "list"), ("host", "show", "web1"), ("admin", "users")):
        old, new = cli_json(*verb, config=router["cfg"]), cli_json(*verb, config=new_cfg)
        assert old == new, verb
    conn = Store(new_state / "nixie.db").conn()
    assert apitokens.verify_token(conn, router["token"])["username"] == "admin"  # the token still works
    # paths under the old state dir now point into the new one
    gen = conn.execute("SELECT gc_root FROM generations").fetchone()[0]
    log_path = conn.execute("SELECT log_path FROM builds").fetchone()[0]
    assert gen == str(new_state / "gcroots/web1-build-1")
    assert Path(log_path).read_bytes() == SECRETS["logs/build-1.log"]
    assert not list(new_state.glob(".nixie-restore-*"))


def test_restore_over_a_state_dir_keeps_the_previous_one(router, tmp_path):
    archive = tmp_path / "b.tar.gz"
    backup.backup(router["state"], archive)
    run_nixie("host", "add", "later", "--mac", "bc:24:11:00:00:09", "--flake", "f",
              config=router["cfg"])
    res = backup.restore(archive, router["state"])
    assert res.previous and Path(res.previous, "nixie.db").exists()
    names = [h["name"] for h in cli_json("host", "list", config=router["cfg"])]
    assert names == ["web1"]


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(d.rglob("*")) if "nixie.db" not in p.name}


def craft(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, data: bytes = b"x", **kw) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data if info.isreg() else None


@pytest.mark.parametrize("evil", [
    member("../escaped", b"pwned"),
    member("tls/../../escaped", b"pwned"),
    member("/tmp/escaped-abs", b"pwned"),
    member("secret_key", b"", type=tarfile.SYMTYPE, linkname="/etc/shadow"),
    member("tls", b"", type=tarfile.SYMTYPE, linkname="/"),
    member("secret_key", b"", type=tarfile.LNKTYPE, linkname="../escaped"),
    member("dev", b"", type=tarfile.CHRTYPE),
    member("gcroots/x", b"y"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "dir-symlink", "hardlink", "device",
        "gcroot"])
def test_crafted_archive_is_refused_and_nothing_written(router, tmp_path, evil):
    good = tmp_path / "good.tar.gz"
    backup.backup(router["state"], good)
    evil_path = tmp_path / "evil.tar.gz"
    with tarfile.open(good) as src:  # the good archive with the evil member first
        members = [(evil[0], evil[1])] + [(m, src.extractfile(m).read() if m.isreg() else None)
                                         for m in src.getmembers()]
    craft(evil_path, members)
    before = snapshot(router["state"])
    with pytest.raises(InvalidInput) as e:
        backup.restore(evil_path, router["state"])
    assert "nothing was restored" in str(e.value) or "not state" in str(e.value)
    assert snapshot(router["state"]) == before
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-abs").exists()
    assert not list(router["state"].glob(".nixie-restore-*"))


def test_huge_member_is_refused_before_it_is_written(router, tmp_path):
    # a header claiming far more than the disk holds, with no data behind it
    info = tarfile.TarInfo("logs/huge")
    info.size = 1 << 50
    raw = io.BytesIO()
    raw.write(info.tobuf(format=tarfile.GNU_FORMAT))
    evil = tmp_path / "huge.tar"
    evil.write_bytes(raw.getvalue() + b"\0" * 4096)
    before = snapshot(router["state"])
    with pytest.raises(InvalidInput, match="do not fit"):
        backup.restore(evil, router["state"])
    assert snapshot(router["state"]) == before
    assert not list(router["state"].glob(".nixie-restore-*"))


def test_cli_refuses_a_newer_schema_with_a_clear_error_and_changes_nothing(router, tmp_path):
    good = tmp_path / "good.tar.gz"
    backup.backup(router["state"], good)
    newer = tmp_path / "newer.tar.gz"
    work = tmp_path / "work"
    with tarfile.open(good) as src:
        src.extractall(work, filter="data")
    conn = sqlite3.connect(work / "nixie.db")
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    conn.close()
    manifest = json.loads((work / backup.MANIFEST).read_text())
    manifest["schema_version"] = db.SCHEMA_VERSION + 1
    data = (work / "nixie.db").read_bytes()
    manifest["files"]["nixie.db"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (work / backup.MANIFEST).write_text(json.dumps(manifest))
    with tarfile.open(newer, "w:gz") as tar:
        for name in [*manifest["files"], backup.MANIFEST]:
            tar.add(work / name, arcname=name)
    before = snapshot(router["state"])
    r = run_nixie("restore", str(newer), config=router["cfg"])
    assert r.returncode == 1
    assert f"schema version {db.SCHEMA_VERSION + 1} is newer than this program's" in r.stderr
    assert snapshot(router["state"]) == before
    assert cli_json("host", "list", config=router["cfg"])[0]["name"] == "web1"


def test_altered_member_is_refused(router, tmp_path):
    good = tmp_path / "good.tar.gz"
    backup.backup(router["state"], good)
    altered = tmp_path / "altered.tar.gz"
    with tarfile.open(good) as src:
        members = []
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isreg() else None
            if m.name == "secret_key":
                data = b"A" * len(data)
            members.append((m, data))
    craft(altered, members)
    with pytest.raises(InvalidInput, match="does not match its checksum"):
        backup.restore(altered, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").iterdir())


def test_not_an_archive_and_no_manifest_are_refused(router, tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x1f\x8b not really gzip" * 100)
    with pytest.raises(InvalidInput, match="not a router backup"):
        backup.restore(junk, tmp_path / "fresh")
    bare = craft(tmp_path / "bare.tar.gz", [member("secret_key", b"k" * 32)])
    with pytest.raises(InvalidInput, match="no nixie-backup.json"):
        backup.restore(bare, tmp_path / "fresh")


def test_restore_refuses_while_serve_runs(router, tmp_path):
    good = tmp_path / "good.tar.gz"
    backup.backup(router["state"], good)
    store = Store(router["state"] / "nixie.db")
    write_status(store, {"ok": True, "services": {}})  # a fresh heartbeat: serve runs
    before = snapshot(router["state"])
    r = run_nixie("restore", str(good), config=router["cfg"])
    assert r.returncode == 1 and "nixie serve is running" in r.stderr
    assert snapshot(router["state"]) == before
    with pytest.raises(Conflict):
        backup.restore(good, router["state"])


def test_staged_upload_is_checked_then_restored_at_serve_start(router, tmp_path):
    """The web UI's way: serve cannot restore under itself, so the checked upload waits in
    the state dir and `restore_pending` (serve's first step) restores it."""
    good = tmp_path / "good.tar.gz"
    backup.backup(router["state"], good)
    junk = io.BytesIO(b"not an archive" * 1000)
    with pytest.raises(InvalidInput):
        backup.stage(junk, router["state"])
    assert not backup.pending_path(router["state"]).exists()
    assert not list(router["state"].glob(".nixie-restore-*"))
    run_nixie("host", "add", "later", "--mac", "bc:24:11:00:00:09", "--flake", "f",
              config=router["cfg"])
    with good.open("rb") as f:
        info = backup.stage(f, router["state"])
    assert info["schema_version"] == db.SCHEMA_VERSION
    assert stat.S_IMODE(backup.pending_path(router["state"]).stat().st_mode) == 0o600
    # staged files are never part of a backup
    again = tmp_path / "again.tar.gz"
    backup.backup(router["state"], again)
    with tarfile.open(again) as t:
        assert not [n for n in t.getnames() if n.startswith(".")]
    res = backup.restore_pending(router["state"])
    assert res is not None and not backup.pending_path(router["state"]).exists()
    assert [h["name"] for h in cli_json("host", "list", config=router["cfg"])] == ["web1"]
    assert backup.restore_pending(router["state"]) is None
