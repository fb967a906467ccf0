"""BMC emulators for the tests, each in a namespace the test made:

- `IpmiSim`: OpenIPMI's `ipmi_sim` serving IPMI 2.0 over LAN (RMCP+) with one admin user.
  With `chassis` (a command line), its chassis control (power, boot device) goes to that
  program, which ipmi_sim runs as `PROG ... set power "1"`, `PROG ... get boot` and so on
  (tests/vm/bmc_chassis.py starts and stops a QEMU VM).
- `Redfish`: sushy-tools' emulator with its fake driver (libvirt is not on this machine),
  over HTTPS with a self-signed certificate, Basic auth from an htpasswd file (bcrypt).
- `GarbageServer`: answers every UDP datagram and every TCP connection with junk: a "BMC"
  that answers, but not as a BMC does.

`ipmitool()` is the reference client: what the simulator says, not what we stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import bcrypt

from lab.netns import Netns, stop_processes, wait_port

ROOT = Path(__file__).resolve().parent.parent
SUSHY = Path(sys.executable).parent / "sushy-emulator"


def ipmitool(ns: Netns, port: int, user: str, password: str, *command: str,
             host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    argv = ns.argv("env", f"IPMI_PASSWORD={password}", "ipmitool", "-I", "lanplus", "-H", host,
                   "-p", str(port), "-U", user, "-E", "-N", "2", "-R", "2", *command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


class IpmiSim:
    def __init__(self, ns: Netns, workdir: Path, *, user: str = "admin",
                 password: str = "ipmi-Secret-1", port: int = 623, chassis: str | None = None):
        self.ns, self.workdir, self.user, self.password, self.port = ns, workdir, user, \
            password, port
        self.workdir.mkdir(parents=True, exist_ok=True)
        control = f'  chassis_control "{chassis}"\n' if chassis else ""
        (workdir / "lan.conf").write_text(f'''name "nixiebmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
{control}  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
''')
        (workdir / "bmc.emu").write_text(
            "mc_setbmc 0x20\n"
            "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
            "mc_enable 0x20\n")
        (workdir / "state").mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> IpmiSim:
        self.proc = self.ns.popen("ipmi_sim", "-c", str(self.workdir / "lan.conf"), "-f",
                                  str(self.workdir / "bmc.emu"), "-s",
                                  str(self.workdir / "state"), "-n",
                                  stdin=subprocess.DEVNULL,
                                  stdout=open(self.workdir / "ipmi_sim.log", "w"),
                                  stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.ipmitool("power", "status").returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError("ipmi_sim did not answer: "
                           + (self.workdir / "ipmi_sim.log").read_text()[-2000:])

    def ipmitool(self, *command: str) -> subprocess.CompletedProcess:
        return ipmitool(self.ns, self.port, self.user, self.password, *command)

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], timeout=5, group=True)

    def __enter__(self) -> IpmiSim:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def self_signed(workdir: Path, name: str = "bmc.test") -> tuple[Path, Path]:
    cert, key = workdir / "bmc.crt", workdir / "bmc.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Redfish:
    """sushy-emulator (fake driver) on https://127.0.0.1:PORT inside `ns`."""

    SYSTEM = "27946b59-9e44-4fa7-8e91-f3527a1ef094"

    def __init__(self, ns: Netns, workdir: Path, *, user: str = "root",
                 password: str = "redfish-Secret-1", port: int = 8443):
        self.ns, self.workdir, self.user, self.password, self.port = ns, workdir, user, \
            password, port
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = self_signed(workdir)
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
        systems = [{"uuid": self.SYSTEM, "name": "nixie-fake", "power_state": "Off",
                    "external_notifier": False, "nics": [{"mac": "52:54:00:4e:58:31"}]}]
        self.conf = workdir / "emulator.conf"
        self.conf.write_text(
            f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Redfish:
        self.proc = self.ns.popen(str(SUSHY), "--config", str(self.conf), "--fake",
                                  "-i", "127.0.0.1", "-p", str(self.port),
                                  "--ssl-certificate", str(self.cert), "--ssl-key", str(self.key),
                                  stdin=subprocess.DEVNULL,
                                  stdout=open(self.workdir / "sushy.log", "w"),
                                  stderr=subprocess.STDOUT, cwd=self.workdir,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        if not wait_port(self.ns, "127.0.0.1", self.port, timeout=30):
            raise RuntimeError("sushy-emulator did not start: "
                               + (self.workdir / "sushy.log").read_text()[-2000:])
        return self

    def get(self, path: str) -> dict:
        """GET from the emulator's own API (curl inside the namespace, the emulator's CA)."""
        r = self.ns.run("curl", "-sS", "--fail", "--cacert", str(self.cert), "-u",
                        f"{self.user}:{self.password}",
                        f"https://127.0.0.1:{self.port}{path}", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"GET {path}: {r.stderr}")
        return json.loads(r.stdout)

    def system(self) -> dict:
        return self.get(f"/redfish/v1/Systems/{self.SYSTEM}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], timeout=5, group=True)

    def __enter__(self) -> Redfish:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


GARBAGE = r"""
import socket, sys, threading
port = int(sys.argv[1])
junk = b"\x00garbage\xffnot a BMC\r\n" * 4
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", port))
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", port)); t.listen(8)
def udp():
    while True:
        data, addr = u.recvfrom(4096); u.sendto(junk, addr)
def tcp():
    while True:
        c, _ = t.accept()
        try:
            c.recv(4096); c.sendall(junk)
        finally:
            c.close()
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
"""


class GarbageServer:
    def __init__(self, ns: Netns, port: int):
        self.ns, self.port = ns, port
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> GarbageServer:
        self.proc = self.ns.popen(sys.executable, "-c", GARBAGE, str(self.port),
                                  stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc) -> None:
        stop_processes([self.proc], timeout=5, group=True)
