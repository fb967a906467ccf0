"""What the network services need from the appliance, as interfaces.

`appliance.domain.boot_backend` implements these over SQLite; tests may implement them
over plain dicts. Keep them small: one method per question a server asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


@dataclass(frozen=True)
class HostRecord:
    """What a boot service knows about a machine it is answering."""

    name: str
    id: int
    macs: tuple[str, ...]
    mode: str  # netboot | install | local | cached
    state: str = "unknown"
    ip: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class HostDirectory(Protocol):
    def host_by_mac(self, mac: str) -> HostRecord | None: ...

    def host_by_ip(self, ip: str) -> HostRecord | None:
        """The host a TFTP or HTTP fetch from `ip` belongs to, for its timeline and
        counters (attribution only, never a permission); None when unknown."""
        ...


class NameRecord(NamedTuple):
    """A name the LAN zone may answer for. `source` says who chose it: "host", a
    registered host (the admin: its name is taken even while `ip` is None), or "lease",
    the hostname a DHCP client sent (it gets the name only if nobody else has it:
    `netservices.dns.zone.lan_records`). `ip` is IPv4 or IPv6 (a name may have one of
    each); `owner` (a lease's MAC) lets one client's IPv4 and IPv6 leases share the
    name it sent."""

    name: str
    ip: str | None
    source: str = "host"
    owner: str | None = None


class NameDirectory(Protocol):
    """The LAN's names for DNS (implemented over hosts and bound leases)."""

    def name_records(self) -> list[NameRecord]:
        """Every registered host (with its ipv4, or None), then every bound unexpired
        lease with a hostname, oldest first. DNS rebuilds its zone from this every few
        seconds, deciding which claims win (`zone.lan_records`)."""
        ...


class EventSink(Protocol):
    def event(self, kind: str, message: str = "", *, level: str = "info",
              host_id: int | None = None, mac: str | None = None, ip: str | None = None,
              data: dict[str, Any] | None = None) -> None: ...


# ---------------------------------------------------------------- boot artifacts
# The contract between HTTP boot (netservices/httpboot) and the image builder
# (appliance: per-store-path CPIO cache). An artifact is a concatenation of
# byte ranges of files on disk, so the server can sendfile() each segment and
# knows the total size before the first byte (Content-Length, HEAD, Range).


@dataclass(frozen=True)
class Segment:
    """A byte range of a file on disk."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True)
class Artifact:
    """A file the boot server streams: its segments in order."""

    name: str  # "kernel", "initrd", ...
    segments: tuple[Segment, ...]
    size: int  # == sum(s.length for s in segments)
    etag: str  # stable for identical content (e.g. a hash of the segment list)
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class BootTarget:
    """One bootable system of a host (a generation), as a boot script names it."""

    toplevel: str  # /nix/store/...-nixos-system-NAME-...
    label: str  # shown in the boot menu, e.g. "generation 3 (2026-11-22 12:00)"
    generation_id: int | None = None
    number: int | None = None
    kernel_params: tuple[str, ...] = ()  # the system's own kernel-params file
    current: bool = False  # the generation the admin chose (rollback); the boot default


@dataclass(frozen=True)
class MediaGrant:
    """A live boot-media token: the host it names (None: generic media, the MAC the
    client presents decides) and the base URL the media was made with (its scripts use it)."""

    host: HostRecord | None
    base_url: str


class MediaTokens(Protocol):
    """Optional (HTTP boot looks it up with getattr): boot-media tokens."""

    def media_grant(self, token: str, client_ip: str) -> MediaGrant | None:
        """The grant of a live token (its use counted), or None: unknown or revoked."""
        ...


class Pending(Exception):
    """The artifact or target is being built; the client should retry in `retry_after` s."""

    def __init__(self, message: str = "building", retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class BootArtifacts(Protocol):
    """Implemented by the appliance (issue 5's image builder)."""

    def boot_targets(self, host: HostRecord) -> list[BootTarget]:
        """The host's generations, newest (current) first; [] if never built."""
        ...

    def artifact(self, toplevel: str, name: str) -> Artifact | None:
        """`kernel` or `initrd` of a toplevel. The initrd is the system's stage-1
        initrd followed by one zstd newc CPIO per closure path (built on first
        request, cached, built once under concurrency). None if unknown.
        May raise Pending."""
        ...

    def resolve(self, kind: str, args: list[str]) -> BootTarget:
        """nix-netboot-serve's dispatch kinds: "closure" ([store path basename]),
        "profile" ([name]: state_dir/profiles/NAME, resolved on every boot),
        "configuration" ([name]: built from state_dir/configurations/NAME),
        "hydra" ([host, project, jobset, job]). Raises Pending while building,
        LookupError if there is no such thing."""
        ...

    def closure_listing(self, toplevel: str) -> list[tuple[str, int]] | None:
        """Cached netboot: (store path basename, archive bytes) of the toplevel's
        closure, toplevel last; None if unknown (or this backend has no cached
        netboot). May raise Pending."""
        ...

    def path_artifact(self, toplevel: str, basename: str) -> Artifact | None:
        """Cached netboot: one closure path as a plain newc archive; None outside the
        closure (or without cached netboot)."""
        ...

    def issue_boot_token(self, host: HostRecord, target: BootTarget, client_ip: str,
                         purpose: str) -> str | None:
        """A per-boot agent token bound to the host, the generation booted, the boot's
        purpose ("netboot", "install" or "cached") and the address that fetched the script; it
        replaces the host's outstanding token for that generation. None when that
        address may not have one (it is not the host's): the script then carries none."""
        ...


# ---------------------------------------------------------------- agent API
# The booted system's phone-home (POST /api/v1/agent/events on the HTTP boot
# listener). The HTTP app only parses the request and maps the outcome to HTTP.


class AgentSink(Protocol):
    def agent_report(self, token: str, event: str, message: str, source_ip: str,
                     ssh_host_key: str | None = None) -> dict:
        """Record one agent report and return a JSON-able answer (`ssh_host_key`: the
        host's SSH public key when the agent sent one; passed only then). Raises an
        exception with `.status`: 401 wrong or expired token, 400 bad event,
        403 the token is not valid from `source_ip`, 409 a transition the boot or the
        host's state does not allow."""
        ...
