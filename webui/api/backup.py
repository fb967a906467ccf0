"""Backup, restore and Nix store garbage collection over the API (the same functions as
`nixie backup|restore|gc` and the Backup page)."""

from __future__ import annotations

import tempfile
import time

from flask import g, jsonify, request, send_file

from appliance.domain import events
from appliance.nix import gc
from appliance.state import backup
from appliance.state.status import disk_use, measured_disk

from ..context import config, conn, ctx
from .registry import route

GZIP = "application/gzip"
STAGED = {"type": "object", "properties": {
    "schema_version": {"type": "integer"}, "created_at": {"type": ["number", "null"]},
    "files": {"type": "integer"}, "from_state_dir": {"type": "string"},
    "message": {"type": "string"}}}


def download_name() -> str:
    return f"nixie-backup-{time.strftime('%Y%m%dT%H%M%S')}.tar.gz"


def archive_response():
    """The archive of the state directory as a download (a temporary file, gone when sent)."""
    f = tempfile.TemporaryFile(prefix="nixie-backup-")
    res = backup.backup(config().state_dir, f)
    f.seek(0)
    events.record(conn(), "backup.made", f"backup downloaded by {g.user['username']}",
                  data={"files": res.files, "schema_version": res.schema_version})
    return send_file(f, mimetype=GZIP, as_attachment=True, download_name=download_name(),
                     max_age=0)


def stage_upload(stream) -> dict:
    """Check an uploaded archive whole and stage it: serve stops and restores it at its next
    start (InvalidInput, nothing staged, when it would be refused)."""
    info = backup.stage(stream, config().state_dir)
    events.record(conn(), "backup.staged", f"backup staged for restore by {g.user['username']}: "
                  "nixie serve restarts to restore it", level="warning", data=info)
    return {**info, "message": "The backup is checked and staged: nixie serve stops within "
            "seconds and restores it when it starts again (systemd starts it)."}


@route("/backup", "GET", "Download a backup of the router's state (database, keys, "
       "certificates, settings) as one tar.gz archive", tag="backup",
       response={"type": "string", "format": "binary"}, response_media=GZIP)
def get_backup():
    return archive_response()


@route("/backup/restore", "POST", "Restore a backup: the archive is checked whole (a newer "
       "schema, path escapes, links and damaged members are refused), staged, and restored by "
       "nixie serve at its next start, which follows within seconds", tag="backup",
       body={"type": "string", "format": "binary"}, body_media=GZIP, response=STAGED,
       status=202, errors=(400, 413))
def restore_backup():
    # its body limit is web.max_restore_bytes: the app's raise_body_limit (views/backup.py)
    return jsonify(stage_upload(request.stream)), 202


GC_STATE = {"type": "object", "properties": {
    "last": {"type": ["object", "null"]}, "requested": {"type": "boolean"},
    "disk": {"type": "object"}}}


def gc_state() -> dict:
    """The last collection, a pending request, and the disk use serve's gc service
    measured last (`measured_at`); measured here only when it has no figure."""
    cfg = config()
    disk = measured_disk(ctx().health()) or disk_use(cfg.state_dir, gc.STORE_DIR,
                                                     cfg.gc.disk_warn_percent)
    return {"last": gc.last(conn()), "requested": gc.is_requested(conn()), "disk": disk}


@route("/gc", "GET", "The last Nix store garbage collection and disk use", tag="backup",
       response=GC_STATE)
def get_gc():
    return jsonify(gc_state())


@route("/gc", "POST", "Ask nixie serve to delete the store paths of the generations the "
       "router dropped now (it runs within seconds)", tag="backup", response=GC_STATE,
       status=202)
def post_gc():
    gc.request(conn())
    return jsonify(gc_state()), 202
