"""serve's status heartbeat: every HEARTBEAT_SECONDS `nixie serve` writes its
supervisor's health to the DB (settings key `serve.status`); web worker
processes, `nixie status` and the tests read it from there."""

from __future__ import annotations

import os
from typing import Any

from appliance.state import kv
from appliance.state.db import Store, now

HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS  # a heartbeat older than this: serve is not running


def write_status(store: Store, health: dict[str, Any], state: str = "running") -> None:
    kv.put(store.conn(), "serve.status", {"pid": os.getpid(), "ts": now(), "state": state, **health})


def read_status(conn) -> dict[str, Any] | None:
    """The last heartbeat (pid, ts, state, ok, services), or None before the first."""
    return kv.get(conn, "serve.status")


def running_status(conn, stale_seconds: float = STALE_SECONDS) -> dict[str, Any] | None:
    """The last heartbeat while serve runs (state running, fresher than
    `stale_seconds`), else None: serve stopped, died or never ran."""
    st = read_status(conn)
    if st and st.get("state") == "running" and now() - float(st.get("ts") or 0) < stale_seconds:
        return st
    return None


# ------------------------------------------------------------------ the disk under state_dir

LOW_SPACE_BYTES = 64 << 20
LOW_SPACE_FRACTION = 0.05  # on a small disk: this share of it


def human_size(n: float) -> str:
    """`n` bytes for people: 512 B, 8.0 MiB, 1.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def storage(state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Free space under `state_dir`: not ok below LOW_SPACE_BYTES (or LOW_SPACE_FRACTION of
    a smaller disk), with a warning saying what that does to the appliance."""
    st = os.statvfs(state_dir)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    low = free < min(LOW_SPACE_BYTES, total * LOW_SPACE_FRACTION)
    out: dict[str, Any] = {"path": str(state_dir), "free_bytes": free, "total_bytes": total,
                           "ok": not low}
    if low:
        out["warning"] = (
            f"DISK {'FULL' if free == 0 else 'NEARLY FULL'}: {human_size(free)} free of {human_size(total)} "
            f"under {state_dir}. The state database cannot grow: DHCP still renews the leases "
            "it has on disk but gives new clients no lease, and events are lost. Free space.")
    return out


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes the files under `path` take on disk (allocated blocks; symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def disk_use(state_dir: str | os.PathLike[str], store_dir: str | os.PathLike[str],
             warn_percent: int) -> dict[str, Any]:
    """What the router's state takes and how full the filesystems holding `state_dir` and
    the Nix store are (`store_dir`, once when both are on one); `warnings` from
    `warn_percent` used on; `measured_at`. It walks the whole state dir: serve's gc service
    does it every minute, and readers take its figure (`measured_disk`)."""
    out: dict[str, Any] = {"state_dir": {"path": str(state_dir), "bytes": tree_bytes(state_dir)},
                           "warn_percent": warn_percent, "filesystems": [], "warnings": [],
                           "measured_at": now()}
    seen: dict[int, dict[str, Any]] = {}
    for role, path in (("state_dir", state_dir), ("nix_store", store_dir)):
        try:
            dev = os.stat(path).st_dev
            st = os.statvfs(path)
        except OSError as e:
            out["warnings"].append(f"cannot check the disk under {path}: {e.strerror}")
            continue
        if dev in seen:
            seen[dev]["holds"].append(role)
            continue
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        used = total - st.f_bfree * st.f_frsize
        pct = round(100.0 * used / (used + free), 1) if used + free else 0.0
        fs = {"path": str(path), "holds": [role], "total_bytes": total, "used_bytes": used,
              "free_bytes": free, "used_percent": pct}
        seen[dev] = fs
        out["filesystems"].append(fs)
    for fs in out["filesystems"]:
        if fs["used_percent"] >= warn_percent:
            out["warnings"].append(
                f"DISK {fs['used_percent']:.0f}% USED (warning from {warn_percent}%) on the "
                f"filesystem of {' and '.join(fs['holds'])} ({fs['path']}): {human_size(fs['free_bytes'])} "
                "free. Run nixie gc, lower builder.keep_generations or free space.")
    return out


def measured_disk(health: dict[str, Any]) -> dict[str, Any] | None:
    """The gc service's last `disk_use` in the health report (`appliance.nix.gc`), or None
    while it has none (serve not running, or not measured yet)."""
    return ((health.get("services") or {}).get("gc") or {}).get("stats", {}).get("disk")


def disk_line(use: dict[str, Any]) -> str:
    """`disk_use` in one line: what the state takes, how full each filesystem is."""
    parts = [f"state {human_size(use['state_dir']['bytes'])}"]
    for fs in use["filesystems"]:
        parts.append(f"{'+'.join(fs['holds'])} on {fs['path']}: {fs['used_percent']:.0f}% used, "
                     f"{human_size(fs['free_bytes'])} free")
    return "disk: " + "; ".join(parts)


def with_storage(health: dict[str, Any], state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """`health` (the supervisor's report) with the disk under `state_dir` and the DHCP lease
    store's commit trouble: not ok, with `warnings`, when either is in trouble."""
    out = {**health}
    warnings = list(health.get("warnings") or [])
    try:
        disk = storage(state_dir)
    except OSError as e:
        disk = {"path": str(state_dir), "ok": False, "warning": f"cannot check {state_dir}: {e}"}
    out["storage"] = disk
    if not disk["ok"]:
        warnings.append(disk["warning"])
    # the gc service's disk use (appliance.nix.gc), with its threshold's warnings
    use = measured_disk(health)
    if use:
        out["disk"] = use
        warnings.extend(use.get("warnings") or [])
    dhcp = ((health.get("services") or {}).get("dhcp") or {}).get("stats") or {}
    trouble = dhcp.get("disk_trouble")
    if trouble:
        warnings.append(
            f"LEASES NOT WRITTEN for {now() - trouble['since']:.0f} s ({trouble['error']}): "
            f"{trouble['kept_renewals']} renewals answered from the leases on disk, "
            f"{trouble['not_durable']} new leases refused, {trouble['lost_events']} events lost.")
    if warnings:
        out["ok"] = False
        out["warnings"] = list(dict.fromkeys(warnings))
    return out
