"""The driver interface every BMC kind implements, and the errors a driver raises."""

from __future__ import annotations

from typing import Protocol

from appliance.errors import NixieError

ON, OFF = "on", "off"


class BmcError(NixieError):
    """Talking to a BMC failed; the message says what to check. Nothing was changed by us."""

    http_status = 502
    reason = "error"


class BmcAuthFailed(BmcError):
    reason = "auth"


class BmcUnreachable(BmcError):
    reason = "unreachable"


class BmcBadAnswer(BmcError):
    reason = "bad_answer"


class PowerDriver(Protocol):
    """One BMC. Every method raises BmcError (or a subclass) when the BMC cannot do it."""

    def status(self) -> str:
        """"on" or "off"."""
        ...

    def on(self) -> None: ...

    def off(self) -> None:
        """Hard power off (not an ACPI shutdown)."""
        ...

    def cycle(self) -> None:
        """Power cycle a running machine (off, then on)."""
        ...

    def set_next_boot_pxe(self) -> None:
        """Boot from the network once, on the next power on or reset."""
        ...
