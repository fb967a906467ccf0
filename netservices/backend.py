"""What the network services need from the appliance, as interfaces.

`appliance.backend` implements these over SQLite; tests may implement them
over plain dicts. Keep them small: one method per question a server asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class HostRecord:
    """What a boot service knows about a machine it is answering."""

    name: str
    id: int
    macs: tuple[str, ...]
    mode: str  # netboot | install | local
    state: str = "unknown"
    ip: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class HostDirectory(Protocol):
    def host_by_mac(self, mac: str) -> HostRecord | None: ...


class EventSink(Protocol):
    def event(self, kind: str, message: str = "", *, level: str = "info",
              host_id: int | None = None, mac: str | None = None, ip: str | None = None,
              data: dict[str, Any] | None = None) -> None: ...
