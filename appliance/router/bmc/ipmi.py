"""IPMI over LAN (RMCP+, `lanplus`) through the `ipmitool` program.

Why ipmitool and not a Python IPMI library: it is the reference client every BMC vendor
tests against (cipher suites 3 and 17, the quirks of iDRAC, iLO, Supermicro), it is one
Debian package on the router image, and its exit status plus its messages are enough for
the five actions we need. The password goes in the environment (`-E`, `IPMI_PASSWORD`),
never on the command line where `ps` would show it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess

from appliance.domain.bmc import Credentials

from .driver import OFF, ON, BmcAuthFailed, BmcBadAnswer, BmcError, BmcUnreachable

IPMITOOL = "ipmitool"
_STATUS = re.compile(r"^Chassis Power is (on|off)\s*$", re.M)


class IpmiDriver:
    def __init__(self, creds: Credentials, *, timeout: float = 20, retries: int = 1):
        self.creds = creds
        self.timeout = timeout
        self.retries = retries

    def _where(self) -> str:
        b = self.creds.bmc
        return f"IPMI BMC {b.address}:{b.port}"

    def argv(self, *command: str) -> list[str]:
        b = self.creds.bmc
        return [IPMITOOL, "-I", "lanplus", "-H", b.address, "-p", str(b.port), "-U", b.username,
                "-E", "-N", "2", "-R", str(self.retries), "-v", *command]

    def run(self, *command: str) -> str:
        """Run one ipmitool command; its stdout, or BmcError saying why not."""
        if shutil.which(IPMITOOL) is None:
            raise BmcError("ipmitool is not installed on the router (Debian package ipmitool)")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IPMI_PASSWORD":
               self.creds.password}
        try:
            r = subprocess.run(self.argv(*command), env=env, capture_output=True, text=True,
                               timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BmcUnreachable(f"{self._where()} did not answer within {self.timeout:.0f} s") \
                from None
        err = r.stderr
        if "RAKP 2 HMAC is invalid" in err or "unauthorized name" in err:
            raise BmcAuthFailed(f"{self._where()} refused the user name or password")
        if "invalid authentication algorithm" in err or "no matching cipher suite" in err.lower():
            raise BmcError(f"{self._where()} offers no cipher suite ipmitool accepts "
                           "(enable cipher suite 17 or 3 on the BMC)")
        if "Unable to establish IPMI v2 / RMCP+ session" in err:
            self._diagnose()
            raise BmcBadAnswer(f"{self._where()} answered, but no IPMI 2.0 session could be "
                               "established")
        failed = [line for line in err.splitlines() if "failed" in line.lower()
                  or line.startswith("Error")]
        if r.returncode != 0 or failed:
            detail = (failed or err.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise BmcError(f"{self._where()}: {' '.join(command)}: {detail.strip()[:200]}")
        return r.stdout

    def _diagnose(self) -> None:
        """ipmitool could not open a session: tell an unreachable BMC from one that answers
        garbage with an RMCP presence ping (what `rmcp_ping` answers)."""
        b = self.creds.bmc
        answer = rmcp_ping(b.address, b.port)
        if answer == "refused":
            raise BmcUnreachable(f"{self._where()}: nothing listens on UDP port {b.port} "
                                 "(is IPMI over LAN enabled?)")
        if answer == "silent":
            raise BmcUnreachable(f"{self._where()} does not answer (address, port {b.port}/udp, "
                                 "'IPMI over LAN' enabled?)")
        if answer == "garbage":
            raise BmcBadAnswer(f"{self._where()} answered, but not with IPMI/RMCP: is it a BMC?")

    def status(self) -> str:
        out = self.run("power", "status")
        m = _STATUS.search(out)
        if not m:
            raise BmcBadAnswer(f"{self._where()}: unexpected answer to 'power status': "
                               f"{out.strip()[:100]!r}")
        return ON if m.group(1) == "on" else OFF

    def _control(self, verb: str, expect: str) -> None:
        out = self.run("power", verb)
        if expect not in out:
            raise BmcBadAnswer(f"{self._where()}: unexpected answer to 'power {verb}': "
                               f"{out.strip()[:100]!r}")

    def on(self) -> None:
        self._control("on", "Up/On")

    def off(self) -> None:
        self._control("off", "Down/Off")

    def cycle(self) -> None:
        self._control("cycle", "Cycle")

    def set_next_boot_pxe(self) -> None:
        out = self.run("chassis", "bootdev", "pxe")
        if "Set Boot Device to pxe" not in out:
            raise BmcBadAnswer(f"{self._where()}: unexpected answer to 'chassis bootdev pxe': "
                               f"{out.strip()[:100]!r}")


def rmcp_ping(address: str, port: int, timeout: float = 2.0) -> str:
    """Send an RMCP/ASF presence ping (DMTF ASF 2.0, 3.2.4.1): "pong" when a BMC answers
    as one, "garbage" for any other answer, "refused" when the host says nothing listens
    (ICMP port unreachable), "silent" when nothing comes back."""
    ping = bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x4E, 0x00, 0x00])
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return "silent"
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(addr)
            s.send(ping)
            data = s.recv(512)
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "silent"
    is_pong = len(data) >= 12 and data[0] == 0x06 and data[3] == 0x06 and data[8] == 0x40
    return "pong" if is_pong else "garbage"
