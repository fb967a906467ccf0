"""Redfish over HTTPS with `requests`.

Why `requests` and not `sushy`: we need four calls (read a ComputerSystem, POST its Reset
action, PATCH its Boot override, list Systems), all plain JSON over HTTPS with Basic auth.
`requests` is already what the appliance's tests use and a small dependency; `sushy` pulls
in a dozen OpenStack libraries for a resource model we would not use. TLS verification is
per BMC (`verify_tls`): BMCs ship self-signed certificates, so turning it off is the admin's
explicit choice, recorded with the BMC.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import requests
import urllib3

from appliance.domain.bmc import Credentials

from .driver import OFF, ON, BmcAuthFailed, BmcBadAnswer, BmcError, BmcUnreachable

SYSTEMS = "/redfish/v1/Systems"
_POWER = {"On": ON, "PoweringOn": ON, "Paused": ON, "Off": OFF, "PoweringOff": OFF}


class RedfishDriver:
    def __init__(self, creds: Credentials, *, timeout: float = 20):
        self.creds = creds
        self.timeout = timeout
        b = creds.bmc
        self.base = f"https://{'[' + b.address + ']' if ':' in b.address else b.address}" \
                    f":{b.port}"
        self.session = requests.Session()
        self.session.auth = (b.username, creds.password)
        self.verify = b.verify_tls  # per request: a session's verify loses to REQUESTS_CA_BUNDLE
        self.session.headers.update({"Accept": "application/json", "OData-Version": "4.0"})
        self._system: str | None = None

    def _where(self) -> str:
        return f"Redfish BMC {self.creds.bmc.address}:{self.creds.bmc.port}"

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        """One request; the decoded JSON answer (None for an empty one), or BmcError."""
        try:
            with warnings.catch_warnings():  # verify_tls off is the admin's choice
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                r = self.session.request(method, self.base + path, json=body,
                                         timeout=self.timeout, allow_redirects=False,
                                         verify=self.verify)
        except requests.exceptions.SSLError as e:
            if "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate verify failed" in str(e):
                raise BmcError(f"{self._where()}: its TLS certificate is not trusted "
                               f"({_short(e)}); install a certificate the router trusts or "
                               "turn TLS verification off for this BMC") from None
            raise BmcBadAnswer(f"{self._where()} does not speak HTTPS ({_short(e)})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise BmcUnreachable(f"{self._where()} is unreachable ({_short(e)})") from None
        except requests.exceptions.RequestException as e:
            raise BmcError(f"{self._where()}: {_short(e)}") from None
        if r.status_code in (401, 403):
            raise BmcAuthFailed(f"{self._where()} refused the user name or password "
                                f"(HTTP {r.status_code})")
        if r.status_code >= 400:
            raise BmcError(f"{self._where()}: {method} {path}: HTTP {r.status_code}"
                           f"{_redfish_message(r)}")
        if not r.content.strip():
            return None
        try:
            return r.json()
        except ValueError:
            raise BmcBadAnswer(f"{self._where()} answered {method} {path} with something that "
                               "is not Redfish JSON") from None

    def system_path(self) -> str:
        """/redfish/v1/Systems/<id>: the configured id, else the only system the BMC lists."""
        if self._system:
            return self._system
        sid = self.creds.bmc.system_id
        if sid:
            self._system = f"{SYSTEMS}/{sid}"
            return self._system
        listing = self.request("GET", SYSTEMS)
        try:
            members = [m["@odata.id"] for m in listing["Members"]]
        except (TypeError, KeyError):
            raise BmcBadAnswer(f"{self._where()}: {SYSTEMS} is not a Redfish collection") \
                from None
        if len(members) != 1 or not isinstance(members[0], str) \
                or not members[0].startswith(SYSTEMS + "/"):
            raise BmcError(f"{self._where()} lists {len(members)} systems: set the system id "
                           "(e.g. System.Embedded.1 on iDRAC, 1 on iLO and Supermicro)")
        self._system = members[0].rstrip("/")
        return self._system

    def _system_record(self) -> dict[str, Any]:
        rec = self.request("GET", self.system_path())
        if not isinstance(rec, dict):
            raise BmcBadAnswer(f"{self._where()}: {self.system_path()} is not a Redfish "
                               "ComputerSystem")
        return rec

    def status(self) -> str:
        rec = self._system_record()
        state = rec.get("PowerState")
        if state not in _POWER:
            raise BmcBadAnswer(f"{self._where()}: PowerState {state!r} is not a Redfish "
                               "power state")
        return _POWER[state]

    def _reset(self, reset_type: str) -> None:
        rec = self._system_record()
        target = (rec.get("Actions") or {}).get("#ComputerSystem.Reset", {}).get("target") \
            if isinstance(rec.get("Actions"), dict) else None
        if not isinstance(target, str) or not target.startswith("/redfish/"):
            target = self.system_path() + "/Actions/ComputerSystem.Reset"
        self.request("POST", target, {"ResetType": reset_type})

    def on(self) -> None:
        self._reset("On")

    def off(self) -> None:
        self._reset("ForceOff")

    def cycle(self) -> None:
        self._reset("ForceRestart")

    def set_next_boot_pxe(self) -> None:
        self.request("PATCH", self.system_path(), {"Boot": {
            "BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})


def _short(e: Exception) -> str:
    text = str(e)
    m = re.search(r"(certificate verify failed: [^(')]*|\[SSL: [A-Z_]+\] [^(')]*)", text)
    if m:
        return m.group(1).strip()
    for marker in ("Caused by ", "Max retries exceeded"):
        if marker in text:
            text = text.split(marker, 1)[-1]
    return text.strip(" ()'\"")[:160]


def _redfish_message(r: requests.Response) -> str:
    """The Redfish error's message (`error.@Message.ExtendedInfo[0].Message` or
    `error.message`), if the body has one."""
    try:
        err = r.json().get("error", {})
        info = err.get("@Message.ExtendedInfo") or [{}]
        msg = info[0].get("Message") or err.get("message")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f": {str(msg)[:200]}" if msg else ""
