"""The HTTP boot WSGI application: iPXE scripts, kernels and initrds, iPXE binaries,
nix-netboot-serve's dispatch URLs and the agent API. Plain WSGI, no framework:
every route is a few lines over the backend it was given."""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from ..backend import Artifact, BootTarget, HostRecord, MediaGrant, Pending, Segment
from ..tftp.policy import Refused, resolve_path
from . import scripts
from .scripts import BootSettings, UnsafeValue
from .streaming import SegmentStream, Unsatisfiable, parse_range

log = logging.getLogger("nixie.httpboot")

MAX_AGENT_BODY = 64 * 1024
_MAC = re.compile(r"([0-9a-f]{2})([:-]?)([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2"
                  r"([0-9a-f]{2})\2([0-9a-f]{2})")
_NAME = re.compile(r"[A-Za-z0-9._+-]{1,128}")
ARTIFACT_CACHE = "public, max-age=3600"
SCRIPT_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]

StartResponse = Callable[..., Any]


def normalize_mac(text: str) -> str | None:
    m = _MAC.fullmatch(text.lower())
    return ":".join(m.group(i) for i in (1, 3, 4, 5, 6, 7)) if m else None


class NoArtifacts:
    """A BootArtifacts with nothing to boot yet (until the image builder is wired)."""

    def boot_targets(self, host: HostRecord) -> list[BootTarget]:
        return []

    def artifact(self, toplevel: str, name: str) -> Artifact | None:
        return None

    def resolve(self, kind: str, args: list[str]) -> BootTarget:
        raise LookupError(f"no {kind} {'/'.join(args)}")

    def closure_listing(self, toplevel: str) -> list[tuple[str, int]] | None:
        return None

    def path_artifact(self, toplevel: str, basename: str) -> Artifact | None:
        return None

    def issue_boot_token(self, host: HostRecord, target: BootTarget, client_ip: str,
                         purpose: str) -> str | None:
        raise LookupError("no tokens without boot targets")


class _Recent:
    """Which host a client IP rendered a script for, per toplevel basename, so the
    kernel/initrd fetches that follow can be put on that host's timeline."""

    def __init__(self, ttl: float = 3600.0, limit: int = 4096):
        self.ttl, self.limit = ttl, limit
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def remember(self, ip: str, basenames: Iterable[str], host_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > self.limit:
                self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
            for b in basenames:
                self._seen[(ip, b)] = (now + self.ttl, host_id)

    def host_id(self, ip: str, basename: str) -> int | None:
        with self._lock:
            hit = self._seen.get((ip, basename))
        return hit[1] if hit and hit[0] > time.monotonic() else None


def _route_of(path: str) -> str:
    """The route a request path names, for the counters (a fixed set: no label per URL)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["boot"]:
        if len(parts) == 3 and parts[2] in ("kernel", "initrd", "stage1", "closure"):
            return parts[2]
        if len(parts) == 4 and parts[2] == "path":
            return "path"
        return "script"
    if parts[:1] in (["ipxe"], ["dispatch"], ["nix-cache"]):
        return parts[0]
    if parts[:3] == ["api", "v1", "agent"]:
        return "agent"
    return "other"


class _Counters:
    """Responses by route and status, and the bytes of finished or cut transfers by what
    was sent (kernel, initrd, ipxe): what /metrics exports for HTTP boot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: dict[str, int] = {}
        self.transfers: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def response(self, route: str, status: str) -> None:
        key = f"{route} {status[:3]}"
        with self._lock:
            self.responses[key] = self.responses.get(key, 0) + 1

    def transfer(self, what: str, sent: int, complete: bool) -> None:
        key = f"{what} {'completed' if complete else 'interrupted'}"
        with self._lock:
            self.transfers[key] = self.transfers.get(key, 0) + 1
            self.bytes[what] = self.bytes.get(what, 0) + sent

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"responses": dict(self.responses), "transfers": dict(self.transfers),
                    "bytes_sent": dict(self.bytes)}


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


class BootApp:
    def __init__(self, *, hosts, events, artifacts, settings: BootSettings, tftp_root: str,
                 agent=None, mounts: dict[str, Callable] | None = None, zero_copy: bool = True):
        self.hosts = hosts
        self.events = events
        self.artifacts = artifacts or NoArtifacts()
        self.settings = settings
        self.tftp_root = str(tftp_root)
        self.agent = agent
        self.mounts = sorted(((p.rstrip("/"), a) for p, a in (mounts or {}).items()),
                             key=lambda x: -len(x[0]))
        self.zero_copy = zero_copy
        self.recent = _Recent()
        self.counters = _Counters()

    # ------------------------------------------------------------ dispatch
    def __call__(self, environ: dict, start_response: StartResponse):
        route = _route_of(environ.get("PATH_INFO", "") or "/")

        def counted(status: str, headers, exc_info=None):
            self.counters.response(route, status)
            return start_response(status, headers, exc_info) if exc_info else \
                start_response(status, headers)

        return self._dispatch(environ, counted)

    def _dispatch(self, environ: dict, start_response: StartResponse):
        path = environ.get("PATH_INFO", "") or "/"
        for prefix, app in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):]
                return app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        parts = [p for p in path.split("/") if p]
        try:
            if parts[:3] == ["api", "v1", "agent"] and parts[3:] == ["events"]:
                if method != "POST":
                    return self._plain(start_response, 405, "use POST\n", [("Allow", "POST")])
                return self.agent_events(environ, start_response)
            if method not in ("GET", "HEAD"):
                return self._plain(start_response, 405, "method not allowed\n",
                                   [("Allow", "GET, HEAD")])
            if len(parts) == 3 and parts[:2] == ["boot", "m"] and parts[2].endswith((".ipxe", ".grub")):
                return self.media_script(environ, start_response, parts[2][:-5], parts[2][-4:])
            script = parts[:1] == ["dispatch"] or (parts[:1] == ["boot"]
                                                    and parts[-1].endswith(".ipxe"))
            if script and not self._local(environ):
                return self._plain(start_response, 403,
                                   "beyond the LAN, boot through media with a token (/boot/m/)\n")
            if len(parts) == 2 and parts[0] == "boot" and parts[1].endswith(".ipxe"):
                return self.host_script(environ, start_response, parts[1][:-5])
            if len(parts) in (3, 4) and parts[0] == "boot" and parts[2] != "netboot.ipxe":
                return self._store_route(environ, start_response, parts)
            if len(parts) == 3 and parts[0] == "boot" and parts[2] == "netboot.ipxe":
                return self.dispatch(environ, start_response, "closure", [parts[1]])
            if len(parts) >= 3 and parts[0] == "dispatch":
                kind, args = parts[1], parts[2:]
                if (kind, len(args)) in (("profile", 1), ("configuration", 1), ("hydra", 4)):
                    return self.dispatch(environ, start_response, kind, args)
            if len(parts) == 2 and parts[0] == "ipxe":
                return self.ipxe_binary(environ, start_response, parts[1])
        except UnsafeValue as e:
            return self._plain(start_response, 400, f"{e}\n")
        return self._plain(start_response, 404, "not found\n")

    def stats(self) -> dict[str, Any]:
        return self.counters.to_dict()

    def _store_route(self, environ, start_response, parts: list[str]):
        """`/boot/<toplevel>/kernel|initrd|stage1|closure` and `/boot/<toplevel>/path/<p>`."""
        if len(parts) == 3 and parts[2] in ("kernel", "initrd", "stage1"):
            return self.artifact(environ, start_response, parts[1], parts[2])
        if len(parts) == 3 and parts[2] == "closure":
            return self.closure_listing(environ, start_response, parts[1])
        if len(parts) == 4 and parts[2] == "path":
            return self.path_archive(environ, start_response, parts[1], parts[3])
        return self._plain(start_response, 404, "not found\n")

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _plain(start_response, status: int, text: str, headers=()):
        body = text.encode()
        reason = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
                  403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                  409: "Conflict", 413: "Payload Too Large", 416: "Range Not Satisfiable",
                  503: "Service Unavailable"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8"),
                                               ("Content-Length", str(len(body))), *headers])
        return [body]

    @staticmethod
    def _script(environ, start_response, text: str):
        body = text.encode()
        start_response("200 OK", [*SCRIPT_HEADERS, ("Content-Length", str(len(body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _event(self, kind: str, message: str, environ, **kw) -> None:
        try:
            self.events.event(kind, message, ip=environ.get("REMOTE_ADDR"), **kw)
        except Exception:  # noqa: BLE001 - a failing event sink must not fail a boot
            log.warning("could not record a boot event", exc_info=True)

    def _host_id_by_ip(self, ip: str) -> int | None:
        if not ip:
            return None
        try:
            host = self.hosts.host_by_ip(ip)
        except Exception:  # noqa: BLE001 - attribution is best effort
            return None
        return host.id if host else None

    def _host_of(self, environ, basename: str) -> int | None:
        """The host a fetch of `basename`'s files belongs to: the one whose script this
        client fetched naming it, else the one holding the client's lease."""
        ip = environ.get("REMOTE_ADDR") or ""
        host_id = self.recent.host_id(ip, basename)
        return host_id if host_id and host_id > 0 else self._host_id_by_ip(ip)

    def _pending(self, start_response, p: Pending):
        return self._plain(start_response, 503, f"{p}\n", [("Retry-After", str(p.retry_after))])

    def _settings(self, environ) -> BootSettings:
        """The boot settings for this request's client (its address family's URLs)."""
        return self.settings.for_client(environ.get("REMOTE_ADDR") or "")

    def _self_url(self, environ) -> str:
        url = self._settings(environ).base_url + environ.get("PATH_INFO", "")
        qs = environ.get("QUERY_STRING", "")
        if qs:
            url += "?" + qs
        if any(c in url for c in " \n\r\t$"):
            raise UnsafeValue("URL has characters iPXE would interpret")
        return url

    def _local(self, environ) -> bool:
        """Whether the client is on the LAN (or a trusted segment): only there may scripts
        be fetched without a media token. Kernels and initrds are named by their store
        hash and served to anyone who can reach the listener."""
        nets = self.settings.local_networks
        if not nets:
            return True
        try:
            ip = ipaddress.ip_address(environ.get("REMOTE_ADDR") or "")
        except ValueError:
            return False
        if ip.is_loopback:
            return True
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        return any(ip in n for n in nets)

    # ------------------------------------------------------------ boot media
    def media_script(self, environ, start_response, token: str, kind: str):
        """`/boot/m/<token>.ipxe?mac=<mac>` (iPXE) or `.grub` (the UEFI media's GRUB): the
        token names the host (per-host media) or the presented MAC does (generic media).
        A refused token gets 403 whoever asks; the script uses the media's base URL."""
        ip = environ.get("REMOTE_ADDR") or ""
        lookup = getattr(self.hosts, "media_grant", None)
        grant: MediaGrant | None = lookup(token, ip) if lookup else None
        if grant is None:
            self._event("boot.media_refused", "boot media token refused", environ)
            return self._plain(start_response, 403, "boot media token refused\n")
        q = parse_qs(environ.get("QUERY_STRING", ""))
        mac = normalize_mac((q.get("mac") or [""])[0])
        host = grant.host or (self.hosts.host_by_mac(mac) if mac else None)
        s = dataclasses.replace(self.settings, base_url=grant.base_url)
        path = f"/boot/m/{token}.{kind}" + (f"?mac={mac.replace(':', '-')}" if mac else "")
        self_url = s.base_url + path
        if host is None:
            self._event("boot.script", f"unknown machine {mac or '(no MAC)'} with media", environ,
                        mac=mac, data={"script": "unknown"})
            if kind == "grub":
                return self._script(environ, start_response, scripts.grub_wait_script(
                    f"unknown machine {mac}: add it as a host", self._grub_path(s, path), 30))
            return self._script(environ, start_response, scripts.unknown_menu_script(
                mac or "-", self_url, s.menu_timeout_seconds))
        if kind == "grub":
            text, what, targets = self._render_grub(host, s, self._grub_path(s, path), ip)
        else:
            text, what, targets = self._render_host(host, s, self_url, ip)
        if targets:
            self.recent.remember(ip, [scripts.store_basename(t.toplevel) for t in targets], host.id)
        self._event("boot.script", f"{host.name}: {what} (boot media)", environ, host_id=host.id,
                    mac=mac, data={"script": what, "media": kind,
                                   "targets": [t.toplevel for t in targets]})
        return self._script(environ, start_response, text)

    @staticmethod
    def _grub_path(s: BootSettings, path: str) -> str:
        dev, prefix = scripts.grub_device(s.base_url)
        return f"{dev}{prefix}{path.split('?', 1)[0]}"

    def _render_grub(self, host: HostRecord, s: BootSettings, self_path: str, client_ip: str
                     ) -> tuple[str, str, list[BootTarget]]:
        """GRUB boots the current generation (no menu, no install mode on this path)."""
        try:
            _, t = self._bootable(host, s)
        except Pending as p:
            return (scripts.grub_wait_script(f"{host.name}: {p}", self_path, p.retry_after),
                    "pending", [])
        token = self.artifacts.issue_boot_token(host, t, client_ip, "netboot")
        return scripts.grub_script(t, s, title=host.name, token=token), "netboot", [t]

    # ------------------------------------------------------------ host scripts
    def host_script(self, environ, start_response, mac_text: str):
        mac = normalize_mac(mac_text)
        if mac is None:
            return self._plain(start_response, 400, "expected /boot/<mac>.ipxe\n")
        s = self._settings(environ)
        self_url = f"{s.base_url}/boot/{mac}.ipxe"
        host = self.hosts.host_by_mac(mac)
        if host is None:
            self._event("boot.script", f"unknown machine {mac}", environ, mac=mac,
                        data={"script": "unknown"})
            if s.unknown_clients == "menu":
                text = scripts.unknown_menu_script(mac, self_url, s.menu_timeout_seconds)
            else:
                text = scripts.local_script(mac)
            return self._script(environ, start_response, text)
        ip = environ.get("REMOTE_ADDR") or ""
        text, kind, targets = self._render_host(host, s, self_url, ip)
        if targets:
            self.recent.remember(ip, [scripts.store_basename(t.toplevel) for t in targets], host.id)
        self._event("boot.script", f"{host.name}: {kind}", environ, host_id=host.id, mac=mac,
                    data={"script": kind, "targets": [t.toplevel for t in targets]})
        return self._script(environ, start_response, text)

    def _bootable(self, host: HostRecord, s: BootSettings) -> tuple[list[BootTarget], BootTarget]:
        """The host's targets and the default one, whose initrd is there (asking for it
        builds it; a cached-netboot host needs only the stage 1); Pending when there is
        none yet or it is being built."""
        targets = list(self.artifacts.boot_targets(host))
        if not targets:
            raise Pending("no system built yet", s.retry_seconds)
        default = targets[scripts.default_target(targets)]
        initrd = "stage1" if host.mode == "cached" else "initrd"
        if self.artifacts.artifact(default.toplevel, initrd) is None:
            raise Pending("initrd not available yet", s.retry_seconds)
        return targets, default

    def _render_host(self, host: HostRecord, s: BootSettings, self_url: str, client_ip: str
                     ) -> tuple[str, str, list[BootTarget]]:
        """The script, its kind and its targets. Agent tokens are bound to `client_ip`
        (the backend gives none to an address that is not the host's)."""
        if host.mode == "local":
            return scripts.local_script(host.name), "local", []
        try:
            targets, default = self._bootable(host, s)
        except Pending as p:
            return scripts.retry_script(f"{host.name}: {p}", self_url, p.retry_after), "pending", []
        if host.mode == "install":
            t = default
            token = self.artifacts.issue_boot_token(host, t, client_ip, "install")
            # the installer installs the system it was booted with (`nixie.system`)
            return (scripts.target_script(t, s, self_url, title=f"{host.name} installer",
                                          token=token, extra=["nixie.mode=install",
                                                              f"nixie.system={t.toplevel}",
                                                              *scripts.cache_key_params(s)]),
                    "install", [t])
        # cached: the same menu and generations, but only the stage-1 initrd; the stage 1
        # keeps /nix/store on the disk and fetches the paths it lacks
        cached = host.mode == "cached"
        purpose, extra = ("cached", scripts.cached_params(s)) if cached else ("netboot", [])
        initrd = "stage1" if cached else "initrd"
        if s.menu and s.menu_timeout_seconds > 0:
            # one token per generation listed: each replaces that generation's last one
            text = scripts.menu_script(
                host, targets, s, self_url,
                lambda t: self.artifacts.issue_boot_token(host, t, client_ip, purpose),
                extra=extra, initrd=initrd)
            return text, "cached" if cached else "menu", targets
        t = default
        token = self.artifacts.issue_boot_token(host, t, client_ip, purpose)
        return (scripts.target_script(t, s, self_url, title=host.name, token=token, extra=extra,
                                      initrd=initrd), purpose, [t])

    # ------------------------------------------------------------ dispatch kinds
    def dispatch(self, environ, start_response, kind: str, args: list[str]):
        if kind == "closure":
            if not scripts.is_store_basename(args[0]):
                return self._plain(start_response, 404, "not a store path\n")
        elif not all(_NAME.fullmatch(a) for a in args):
            return self._plain(start_response, 400, "names may use letters, digits, . _ + -\n")
        q = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        prefix = scripts.split_args(" ".join(q.get("cmdline_prefix_args", [])))
        suffix = scripts.split_args(" ".join(q.get("cmdline_suffix_args", [])))
        self_url = self._self_url(environ)
        what = f"{kind} {'/'.join(args)}"
        try:
            target = self.artifacts.resolve(kind, list(args))
            if self.artifacts.artifact(target.toplevel, "initrd") is None:
                raise Pending("initrd not available yet", self.settings.retry_seconds)
        except Pending as p:
            self._event("boot.script", f"{what}: {p}", environ, data={"script": "pending"})
            return self._script(environ, start_response,
                                scripts.retry_script(f"{what}: {p}", self_url, p.retry_after))
        except LookupError as e:
            return self._plain(start_response, 404, f"{e}\n")
        self.recent.remember(environ.get("REMOTE_ADDR") or "", [scripts.store_basename(target.toplevel)], -1)
        self._event("boot.script", what, environ, data={"script": kind, "targets": [target.toplevel]})
        text = scripts.target_script(target, self._settings(environ), self_url, title=what,
                                     prefix=prefix, suffix=suffix)
        return self._script(environ, start_response, text)

    # ------------------------------------------------------------ kernel / initrd
    def artifact(self, environ, start_response, basename: str, name: str):
        if not scripts.is_store_basename(basename):
            return self._plain(start_response, 404, "not a store path\n")
        toplevel = "/nix/store/" + basename
        try:
            art = self.artifacts.artifact(toplevel, name)
        except Pending as p:
            return self._pending(start_response, p)
        host_id = self._host_of(environ, basename)
        kind = f"boot.{name}"
        if art is None:
            self._event(kind, f"{name} missing for {basename}", environ, host_id=host_id,
                        level="error", data={"toplevel": toplevel, "status": "missing"})
            return self._plain(start_response, 404, f"no {name} for {basename}\n")

        def on_close(sent: int, length: int) -> None:
            self.counters.transfer(name, sent, sent >= length)
            if sent >= length:
                self._event(kind, f"{name} sent ({sent} bytes)", environ, host_id=host_id,
                            data={"toplevel": toplevel, "bytes": sent, "status": "completed"})
            else:
                self._event(kind, f"{name} interrupted after {sent} of {length} bytes",
                            environ, host_id=host_id, level="warning",
                            data={"toplevel": toplevel, "bytes": sent, "status": "interrupted"})

        return self._serve_segments(environ, start_response, art.segments, art.size, art.etag,
                                    art.content_type, ARTIFACT_CACHE,
                                    on_start=lambda start, n: self._event(
                                        kind, f"{name} requested", environ, host_id=host_id,
                                        data={"toplevel": toplevel, "offset": start,
                                              "bytes": n, "status": "started"}),
                                    on_close=on_close)

    # ------------------------------------------------------------ cached netboot
    def _store_toplevel(self, start_response, basename: str):
        """The toplevel of `basename`, or a 404 answer when this is no store path."""
        if not scripts.is_store_basename(basename):
            return None, self._plain(start_response, 404, "not a store path\n")
        return "/nix/store/" + basename, None

    def closure_listing(self, environ, start_response, basename: str):
        """`/boot/<toplevel>/closure`: the closure a cached-netboot stage 1 needs, one line
        per store path, `<basename> <archive bytes>`, the toplevel last. The host fetches
        those its disk lacks from `/boot/<toplevel>/path/<basename>.cpio`."""
        toplevel, refused = self._store_toplevel(start_response, basename)
        if refused is not None:
            return refused
        try:
            listing = self.artifacts.closure_listing(toplevel)
        except Pending as p:
            return self._pending(start_response, p)
        if listing is None:
            return self._plain(start_response, 404, f"no closure for {basename}\n")
        total = sum(n for _, n in listing)
        self._event("boot.closure", f"closure listed: {len(listing)} store paths, {total} bytes",
                    environ, host_id=self._host_of(environ, basename),
                    data={"toplevel": toplevel, "paths": len(listing), "bytes": total})
        text = "".join(f"{b} {n}\n" for b, n in listing)
        return self._script(environ, start_response, text)

    def path_archive(self, environ, start_response, basename: str, filename: str):
        """`/boot/<toplevel>/path/<store path basename>.cpio`: one path of that toplevel's
        closure as a plain newc archive (entries `nix/store/<basename>/...`). Anything
        else, including paths outside the closure, is a 404 before any file is opened."""
        toplevel, refused = self._store_toplevel(start_response, basename)
        if refused is not None:
            return refused
        name = filename.removesuffix(".cpio")
        if name == filename or not scripts.is_store_basename(name):
            return self._plain(start_response, 404, "expected <store path basename>.cpio\n")
        try:
            art = self.artifacts.path_artifact(toplevel, name)
        except Pending as p:
            return self._pending(start_response, p)
        if art is None:
            return self._plain(start_response, 404, f"{name} is not in the closure of {basename}\n")
        host_id = self._host_of(environ, basename)

        def on_close(sent: int, length: int) -> None:
            done = sent >= length
            self.counters.transfer("path", sent, done)
            self._event("boot.path", f"{name} sent ({sent} bytes)" if done else
                        f"{name} interrupted after {sent} of {length} bytes", environ,
                        host_id=host_id, level="info" if done else "warning",
                        data={"toplevel": toplevel, "path": name, "bytes": sent,
                              "status": "completed" if done else "interrupted"})

        return self._serve_segments(environ, start_response, art.segments, art.size, art.etag,
                                    art.content_type, ARTIFACT_CACHE, on_close=on_close)

    def _serve_segments(self, environ, start_response, segments: tuple[Segment, ...], size: int,
                        etag: str, content_type: str, cache: str, on_start=None, on_close=None):
        etag_q = '"' + etag.replace('"', "") + '"'
        mtime = 0.0
        for seg in segments:
            try:
                mtime = max(mtime, os.stat(seg.path).st_mtime)
            except OSError:
                return self._plain(start_response, 404, "artifact file is gone\n")
        headers = [("Content-Type", content_type), ("Accept-Ranges", "bytes"), ("ETag", etag_q),
                   ("Last-Modified", _http_date(mtime)), ("Cache-Control", cache)]
        inm = environ.get("HTTP_IF_NONE_MATCH")
        if inm and (inm.strip() == "*" or etag_q in [t.strip() for t in inm.split(",")]):
            start_response("304 Not Modified", headers)
            return []
        rng = environ.get("HTTP_RANGE")
        if_range = environ.get("HTTP_IF_RANGE")
        if rng and if_range and if_range.strip() not in (etag_q, _http_date(mtime)):
            rng = None  # the client's copy is stale: send it all
        try:
            span = parse_range(rng, size)
        except Unsatisfiable:
            return self._plain(start_response, 416, "range not satisfiable\n",
                               [("Content-Range", f"bytes */{size}")])
        if span is None:
            start, length, status = 0, size, "200 OK"
        else:
            start, length = span
            status = "206 Partial Content"
            headers.append(("Content-Range", f"bytes {start}-{start + length - 1}/{size}"))
        headers.append(("Content-Length", str(length)))
        start_response(status, headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return []
        if on_start:
            on_start(start, length)
        return SegmentStream(segments, start, length, zero_copy=self.zero_copy,
                             on_close=on_close)

    # ------------------------------------------------------------ iPXE binaries
    def ipxe_binary(self, environ, start_response, filename: str):
        try:
            path = resolve_path(self.tftp_root, filename)
        except Refused as r:
            return self._plain(start_response, 404 if r.code == 1 else 403, f"{r.message}\n")
        st = os.stat(path)
        etag = hashlib.sha256(f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32]
        method = environ.get("REQUEST_METHOD", "GET")  # UEFI HTTP Boot sends HEAD, then GET
        self._event("boot.ipxe", f"{filename} over HTTP ({method})", environ,
                    data={"file": filename, "method": method})
        return self._serve_segments(
            environ, start_response, (Segment(path, 0, st.st_size),), st.st_size, etag,
            "application/octet-stream", "no-cache",
            on_close=lambda sent, length: self.counters.transfer("ipxe", sent, sent >= length))

    # ------------------------------------------------------------ agent API
    def agent_events(self, environ, start_response):
        def answer(status: int, obj: dict):
            body = json.dumps(obj).encode()
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                      409: "Conflict",
                      413: "Payload Too Large", 503: "Service Unavailable"}.get(status, "Error")
            start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(body)))])
            return [body]

        if self.agent is None:
            return answer(503, {"error": "agent API not available"})
        auth = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = auth.partition(" ")
        if auth and (scheme.lower() != "bearer" or not token.strip()):
            return answer(401, {"error": "missing Authorization: Bearer <token>"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return answer(400, {"error": "bad Content-Length"})
        if length > MAX_AGENT_BODY:
            return answer(413, {"error": f"body larger than {MAX_AGENT_BODY} bytes"})
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
            body = None
        if not auth:  # wget cannot send a header without putting it on its command line
            token = body.get("token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token.strip():
                return answer(401, {"error": "missing Authorization: Bearer <token> "
                                             '(or "token" in the body)'})
        if body is None:
            return answer(400, {"error": "body is not JSON"})
        if not isinstance(body, dict) or not isinstance(body.get("event"), str) \
                or not isinstance(body.get("message", ""), str):
            return answer(400, {"error": 'expected {"event": "...", "message": "..."}'})
        host_key = body.get("ssh_host_key") or ""  # optional: the host's SSH public key
        if not isinstance(host_key, str) or len(host_key) > 4096:
            return answer(400, {"error": "ssh_host_key must be one public key line"})
        try:  # JSON may escape lone surrogates ("\ud800"), which are not text
            (body["event"] + body.get("message", "") + host_key).encode()
        except UnicodeEncodeError:
            return answer(400, {"error": "event, message and ssh_host_key must be Unicode text"})
        extra = {"ssh_host_key": host_key} if host_key else {}  # sinks without it still work
        try:
            result = self.agent.agent_report(token.strip(), body["event"],
                                             body.get("message", ""), environ.get("REMOTE_ADDR"),
                                             **extra)
        except Exception as e:  # noqa: BLE001 - the sink signals with .status
            status = getattr(e, "status", None)
            if status in (400, 401, 403, 409):
                return answer(status, {"error": str(e)})
            log.exception("agent report failed")
            return answer(500, {"error": "internal error"})
        return answer(200, result)
