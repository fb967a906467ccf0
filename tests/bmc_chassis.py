"""ipmi_sim's chassis control program for the tests: `python bmc_chassis.py DIR get|set NAME
[VALUE] ...` as the simulator runs it (lanserv/extcmd.c: `set power "1"`, `get power boot`).

State lives in DIR: `boot` (the boot device: none, pxe, default, cdrom, bios), `power`
(without a VM), `log` (every call, one line each). With DIR/vm.json (`{"pxe": argv,
"disk": argv, "log": path}`) power is a real QEMU process: power on starts the `pxe` argv
when the boot device is pxe and the `disk` one otherwise, and then clears the boot device,
as a BMC does with a one-time boot override; power off kills it; `get power` is whether it
runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _read(d: Path, name: str, default: str) -> str:
    p = d / name
    return p.read_text().strip() if p.exists() else default


def _vm_pid(d: Path) -> int | None:
    pid = _read(d, "qemu.pid", "")
    if not pid:
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    # a zombie (our child never reaped it) is off
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z":
        return None
    return int(pid)


def power_get(d: Path) -> str:
    if (d / "vm.json").exists():
        return "1" if _vm_pid(d) else "0"
    return _read(d, "power", "0")


def power_set(d: Path, value: str) -> None:
    if not (d / "vm.json").exists():
        (d / "power").write_text(value)
        return
    pid = _vm_pid(d)
    if value == "0":
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not _vm_pid(d):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        (d / "qemu.pid").unlink(missing_ok=True)
        return
    if pid:
        return
    vm = json.loads((d / "vm.json").read_text())
    boot = _read(d, "boot", "none")
    argv = vm["pxe"] if boot == "pxe" else vm["disk"]
    with open(vm["log"], "a") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    (d / "qemu.pid").write_text(str(proc.pid))
    (d / "boot").write_text("none")  # one-time: the override is used up by this boot
    with open(d / "log", "a") as f:
        f.write(f"started qemu booting {'pxe' if boot == 'pxe' else 'disk'}\n")


def main(argv: list[str]) -> int:
    d = Path(argv[0])
    verb, rest = argv[1], argv[2:]
    with open(d / "log", "a") as f:
        f.write(" ".join([verb, *rest]) + "\n")
    if verb == "get":
        for name in rest:
            if name == "power":
                print(f"power:{power_get(d)}")
            elif name == "boot":
                print(f"boot:{_read(d, 'boot', 'none')}")
            else:
                return 1
        return 0
    if verb == "check":
        return 0
    if verb == "set":
        pairs = list(zip(rest[::2], rest[1::2], strict=False))
        for name, value in pairs:
            value = value.strip('"')
            if name == "power":
                power_set(d, value)
            elif name == "boot":
                (d / "boot").write_text(value)
            elif name == "reset" and value == "1":
                power_set(d, "0")
                power_set(d, "1")
            elif name == "shutdown" and value == "1":
                power_set(d, "0")
            else:
                return 1
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
