"""Backup of a running router and restore into an empty state dir, with the real `nixie
serve` and the real `nix`: hosts, generations, users, API tokens and keys come back
identical (the files' bytes, and the rows as the CLI and the API show them); the restored
router serves with the same TLS certificate and cache key, its generations' GC roots are
registered with Nix, and it reports disk use. Then the web UI's way: an archive uploaded
to the API makes serve stop (exit 75) and its next start restores it."""

from __future__ import annotations

import json
import ssl
import subprocess
import uuid
from pathlib import Path

from appliance.state import backup
from lab import flake as labflake
from lab.netns import Netns, bridge, serving, start_serve, stop_processes
from tests.conftest import run_nixie, wait_for
from tests.netns.serve_lab import admin_api_token, http_get
from tests.nixlab import lab_config

LAN = "10.77.0.1"
WEB = f"https://{LAN}:8080"
# what the backup must carry byte for byte (relative to state_dir), once serve made them
KEYS = ("secret_key", "tls/cert.pem", "tls/key.pem", "binary-cache/secret", "binary-cache/public")


def served_certificate(ns: Netns) -> str:
    r = ns.run("sh", "-c", f"echo | openssl s_client -connect {LAN}:8080 2>/dev/null "
               "| openssl x509 -outform PEM")
    return ssl.PEM_cert_to_DER_cert(r.stdout).hex()


def cli(cfg_path, *args, ns=None, timeout=120):
    r = run_nixie(*args, "--json", config=cfg_path, ns=ns, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def api_json(ns, path, token):
    status, body = http_get(ns, WEB + path, token)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def test_backup_while_serving_then_restore_into_an_empty_state_dir(tmp_path):
    flake = labflake.materialise(tmp_path / "flake", release=f"backup-test {uuid.uuid4()}")
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    old_cfg, _ = lab_config(old_dir)
    new_cfg, new = lab_config(new_dir)
    token = admin_api_token(old_cfg)
    archive = tmp_path / "router.tar.gz"
    with Netns() as ns:
        bridge(ns, "br-lan", f"{LAN}/24")
        with serving(ns, old_cfg, tmp_path / "old.log", [(LAN, 8080)]):
            assert run_nixie("flake", "add", str(flake), config=old_cfg, ns=ns).returncode == 0
            for name, mac in (("demo", "52:54:00:5e:00:01"), ("demo2", "52:54:00:5e:00:02")):
                assert run_nixie("host", "add", name, "--mac", mac, "--flake", str(flake),
                                 config=old_cfg, ns=ns).returncode == 0
                b = cli(old_cfg, "build", name, "--wait", "--timeout", "200", ns=ns, timeout=220)
                assert b["status"] == "succeeded", b
            old_cert = served_certificate(ns)
            old_cache = cli(old_cfg, "cache", "key", ns=ns)
            before = {path: api_json(ns, path, token) for path in
                      ("/api/v1/hosts", "/api/v1/hosts/demo", "/api/v1/hosts/demo2",
                       "/api/v1/hosts/demo/generations", "/api/v1/hosts/demo2/generations",
                       "/api/v1/users",
                       "/api/v1/tokens")}
            # the backup is made while serve runs and writes (heartbeat, events)
            made = cli(old_cfg, "backup", str(archive), ns=ns)
            assert made["schema_version"] > 0
        old_state = Path(json.loads(old_cfg.read_text())["state_dir"])
        old_keys = {k: (old_state / k).read_bytes() for k in KEYS}

        r = run_nixie("restore", str(archive), "--json", config=new_cfg, ns=ns, timeout=120)
        assert r.returncode == 0, r.stderr
        restored = json.loads(r.stdout)
        assert restored["previous"] is None and restored["gc_roots"]["made"] == 2
        new_state = Path(new.state_dir)
        for k, data in old_keys.items():  # every key byte for byte, owner-only
            assert (new_state / k).read_bytes() == data, k
            assert (new_state / k).stat().st_mode & 0o077 == 0 or k == "binary-cache/public", k

        with serving(ns, new_cfg, tmp_path / "new.log", [(LAN, 8080)]) as proc:
            # the same rows through the API, with the token made before the backup
            after = {path: api_json(ns, path, token) for path in before}
            for path in ("/api/v1/users", "/api/v1/tokens"):  # bounded lists, not paged
                for row in [*before[path], *after[path]]:
                    row.pop("last_used", None)
            for path in before:
                assert after[path] == before[path], path
            assert served_certificate(ns) == old_cert
            assert cli(new_cfg, "cache", "key", ns=ns)["public_key"] == old_cache["public_key"]
            gens = [g["toplevel"] for h in ("demo", "demo2")
                    for g in after[f"/api/v1/hosts/{h}/generations"]]
            assert len(gens) == 2
            nix_roots = subprocess.run(["nix-store", "-q", "--roots", *gens],
                                       capture_output=True, text=True, check=True).stdout
            assert str(new_state / "gcroots") in nix_roots  # registered with Nix, not just links
            # disk use: /healthz (signed in) and nixie status
            assert wait_for(lambda: (json.loads(http_get(ns, WEB + "/healthz", token)[1])
                                     .get("disk") or {}).get("filesystems"), timeout=15)
            status = cli(new_cfg, "status", ns=ns)
            assert status["disk"]["state_dir"]["bytes"] > 0 and status["disk"]["filesystems"]

            # the web UI's way: an uploaded archive is staged, serve stops to restore it
            assert run_nixie("host", "remove", "demo2", config=new_cfg, ns=ns).returncode == 0
            up = ns.run("curl", "-sk", "-o", "/dev/stdout", "-w", "\n%{http_code}", "-X", "POST",
                        "-H", f"Authorization: Bearer {token}", "-H",
                        "Content-Type: application/gzip", "--data-binary", f"@{archive}",
                        f"{WEB}/api/v1/backup/restore", timeout=60)
            assert up.stdout.rstrip().endswith("202"), up.stdout
            assert proc.wait(timeout=20) == backup.RESTART_EXIT
        again = start_serve(ns, new_cfg, tmp_path / "again.log")
        try:
            assert wait_for(lambda: "restored the staged backup" in
                            (tmp_path / "again.log").read_text(), timeout=30)
            assert wait_for(lambda: http_get(ns, WEB + "/api/v1/hosts/demo2", token)[0] == 200,
                            timeout=30)
            assert not backup.pending_path(new_state).exists()
            assert list(new_state.glob(".before-restore-*"))
        finally:
            stop_processes([again])
