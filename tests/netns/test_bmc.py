"""Power control through a BMC against real emulators, each in a namespace of its own, driven
through `nixie power` / `nixie host bmc` run in that namespace:

- IPMI: OpenIPMI's `ipmi_sim` (IPMI 2.0 over LAN, RMCP+) whose chassis control is
  tests/bmc_chassis.py; `ipmitool`, the reference client, reads back what the simulator did.
- Redfish: sushy-tools' emulator with its fake driver (libvirt does not run here), over HTTPS
  with a self-signed certificate; its own API (curl with its CA) says what it recorded.
- Wrong credentials, an unreachable BMC and one that answers garbage: a clear error on the
  host (event, stored last error), and the emulator's state is unchanged.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from appliance.config.schema import example_config
from lab.netns import Netns
from tests.bmc_lab import GarbageServer, IpmiSim, Redfish
from tests.conftest import ROOT, run_nixie

IPMI_PORT = 9623
RF_PORT = 8443


@pytest.fixture
def lab(tmp_path):
    cfg = example_config(state_dir=str(tmp_path / "state"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert run_nixie("host", "add", "srv", "--mac", "52:54:00:4e:58:41", "--flake", "f",
                     config=path).returncode == 0
    with Netns() as ns:
        yield ns, path, tmp_path


def nixie(lab, *args, input=None):
    ns, path, _ = lab
    return run_nixie(*args, config=path, ns=ns, input=input, timeout=120)


def set_bmc(lab, *args, password):
    r = nixie(lab, "host", "bmc", "srv", *args, "--password-stdin", input=password + "\n")
    assert r.returncode == 0, r.stderr
    assert password not in r.stdout + r.stderr


def power(lab, action):
    r = nixie(lab, "power", "srv", action, "--json")
    return r, (json.loads(r.stdout) if r.returncode == 0 else None)


def refusal(r) -> str:
    """The message of a refused `power ... --json`: exit 1 and {"error", "code"} on stdout."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)["error"]


def host_events(lab, kind):
    return json.loads(nixie(lab, "events", "--host", "srv", "--kind", kind, "--json").stdout)


def bmc_record(lab):
    return json.loads(nixie(lab, "host", "bmc", "srv", "--json").stdout)


def chassis(tmp: Path) -> tuple[str, Path]:
    d = tmp / "chassis"
    d.mkdir()
    return f"{sys.executable} {ROOT / 'tests' / 'bmc_chassis.py'} {d}", d


def test_ipmi_pxe_on_status_off_cycle_against_ipmi_sim(lab):
    ns, path, tmp = lab
    prog, d = chassis(tmp)
    with IpmiSim(ns, tmp / "sim", port=IPMI_PORT, chassis=prog) as sim:
        set_bmc(lab, "--kind", "ipmi", "--address", "127.0.0.1", "--port", str(IPMI_PORT),
                "--user", sim.user, password=sim.password)
        # the password is a 0600 file in a 0700 directory, not in the database
        secrets = Path(json.loads(path.read_text())["state_dir"]) / "bmc-secrets"
        files = list(secrets.iterdir())
        assert len(files) == 1 and files[0].read_text() == sim.password
        assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
        db = (Path(json.loads(path.read_text())["state_dir"]) / "nixie.db").read_bytes()
        assert sim.password.encode() not in db

        r, out = power(lab, "pxe")
        assert r.returncode == 0, r.stderr
        assert "Force PXE" in sim.ipmitool("chassis", "bootparam", "get", "5").stdout
        r, out = power(lab, "on")
        assert r.returncode == 0 and out["power_state"] == "on", r.stderr
        assert sim.ipmitool("power", "status").stdout.strip() == "Chassis Power is on"
        assert power(lab, "status")[1]["power_state"] == "on"
        r, out = power(lab, "off")
        assert r.returncode == 0, r.stderr
        assert sim.ipmitool("power", "status").stdout.strip() == "Chassis Power is off"
        assert power(lab, "status")[1]["power_state"] == "off"
        assert bmc_record(lab)["power_state"] == "off"
        # Boot now: pxe, then on (it is off); the chassis saw both, in that order
        r = nixie(lab, "power", "srv", "boot", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["via"] == "bmc" and json.loads(r.stdout)["action"] == "on"
        calls = (d / "log").read_text().splitlines()
        last_pxe = max(i for i, c in enumerate(calls) if c == "set boot pxe")
        last_on = max(i for i, c in enumerate(calls) if c == "set power 1")
        assert last_pxe < last_on, calls
        assert sim.ipmitool("power", "status").stdout.strip() == "Chassis Power is on"
        # power cycle of a running machine: the simulator powers off, then on again
        r, out = power(lab, "cycle")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while (d / "log").read_text().splitlines()[last_on + 1:].count("set power 1") < 1 \
                and time.monotonic() < deadline:
            time.sleep(0.3)
        after = (d / "log").read_text().splitlines()[last_on + 1:]
        assert "set power 0" in after and "set power 1" in after[after.index("set power 0"):], \
            after
        kinds = [e["kind"] for e in host_events(lab, "host.power*")]
        for k in ("host.power_pxe", "host.power_on", "host.power_off", "host.power_cycle"):
            assert k in kinds, kinds


def test_ipmi_wrong_password_unreachable_and_garbage_change_nothing(lab):
    ns, path, tmp = lab
    prog, d = chassis(tmp)
    with IpmiSim(ns, tmp / "sim", port=IPMI_PORT, chassis=prog) as sim:
        set_bmc(lab, "--kind", "ipmi", "--address", "127.0.0.1", "--port", str(IPMI_PORT),
                "--user", sim.user, password="not-the-password")
        for action in ("on", "pxe"):
            r, _ = power(lab, action)
            assert r.returncode != 0
            assert "refused the user name or password" in refusal(r)
        assert sim.ipmitool("power", "status").stdout.strip() == "Chassis Power is off"
        assert "Force PXE" not in sim.ipmitool("chassis", "bootparam", "get", "5").stdout
        assert not any(c.startswith("set") for c in (d / "log").read_text().splitlines())
        failed = host_events(lab, "host.power_failed")
        assert failed and failed[0]["level"] == "error"
        assert "refused the user name or password" in failed[0]["message"]
        assert "not-the-password" not in json.dumps(failed)
        rec = bmc_record(lab)
        assert rec["power_state"] is None and "refused" in rec["last_error"]
        assert "password" not in rec

    # nothing listens any more
    r, _ = power(lab, "status")
    assert "nothing listens on UDP port" in refusal(r)
    # something answers, but not as a BMC
    with GarbageServer(ns, IPMI_PORT):
        r, _ = power(lab, "on")
    assert "not with IPMI/RMCP" in refusal(r)
    assert host_events(lab, "host.power_failed")[0]["data"]["reason"] == "bad_answer"


def wait_emulator(rf: Redfish, key: str, value: str, timeout: float = 30) -> dict:
    """The emulator's system record once `key` is `value` (the fake driver applies power
    changes 1-11 s later, like hardware)."""
    deadline = time.monotonic() + timeout
    while True:
        rec = rf.system()
        if rec[key] == value or time.monotonic() > deadline:
            return rec
        time.sleep(0.5)


def test_redfish_against_sushy_emulator_fake_driver(lab):
    ns, path, tmp = lab
    with Redfish(ns, tmp / "rf", port=RF_PORT) as rf:
        # TLS verification on: the self-signed certificate is refused, nothing changes
        set_bmc(lab, "--kind", "redfish", "--address", "127.0.0.1", "--port", str(RF_PORT),
                "--user", rf.user, password=rf.password)
        r, _ = power(lab, "on")
        assert "TLS certificate is not trusted" in refusal(r)
        # wrong password: 401, nothing changes
        set_bmc(lab, "--no-verify-tls", password="wrong")
        r, _ = power(lab, "pxe")
        assert "refused the user name or password" in refusal(r)
        assert rf.system()["PowerState"] == "Off"
        assert rf.system()["Boot"]["BootSourceOverrideTarget"] == "Hdd"

        set_bmc(lab, password=rf.password)  # TLS verification stays off
        r, _ = power(lab, "pxe")
        assert r.returncode == 0, r.stderr
        assert rf.system()["Boot"]["BootSourceOverrideTarget"] == "Pxe"
        r, out = power(lab, "on")
        assert r.returncode == 0, r.stderr
        assert wait_emulator(rf, "PowerState", "On")["PowerState"] == "On"
        assert power(lab, "status")[1]["power_state"] == "on"
        r, out = power(lab, "off")
        assert r.returncode == 0, r.stderr
        assert wait_emulator(rf, "PowerState", "Off")["PowerState"] == "Off"
        assert power(lab, "status")[1]["power_state"] == "off"
        kinds = [e["kind"] for e in host_events(lab, "host.power*")]
        assert {"host.power_pxe", "host.power_on", "host.power_off", "host.power_failed"} \
            <= set(kinds), kinds
        # the sushy log shows the override's PATCH came with our credentials, not anonymously
        assert rf.password not in json.dumps(host_events(lab, "host.*"))


def test_redfish_garbage_and_unreachable(lab):
    ns, path, tmp = lab
    set_bmc(lab, "--kind", "redfish", "--address", "127.0.0.1", "--port", str(RF_PORT),
            "--user", "root", "--no-verify-tls", password="x")
    r, _ = power(lab, "status")
    assert "is unreachable" in refusal(r)
    with GarbageServer(ns, RF_PORT):
        r, _ = power(lab, "status")
    assert "does not speak HTTPS" in refusal(r)
    assert bmc_record(lab)["last_error"]


def test_reinstall_through_ipmi_sim_sets_pxe_and_powers_on_in_install_mode(lab):
    ns, path, tmp = lab
    prog, d = chassis(tmp)
    with IpmiSim(ns, tmp / "sim", port=IPMI_PORT, chassis=prog) as sim:
        set_bmc(lab, "--kind", "ipmi", "--address", "127.0.0.1", "--port", str(IPMI_PORT),
                "--user", sim.user, password=sim.password)
        assert sim.ipmitool("power", "status").stdout.strip() == "Chassis Power is off"
        r = nixie(lab, "host", "reinstall", "srv", "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["via"], out["action"], out["bmc_error"]) == ("bmc", "on", None)
        # ipmitool, the reference client, reads back what the router asked the BMC for
        assert "Force PXE" in sim.ipmitool("chassis", "bootparam", "get", "5").stdout
        assert sim.ipmitool("power", "status").stdout.strip() == "Chassis Power is on"
        calls = (d / "log").read_text().splitlines()
        assert calls.index("set boot pxe") < calls.index("set power 1"), calls
    host = json.loads(nixie(lab, "host", "show", "srv", "--json").stdout)
    assert host["mode"] == "install"
    kinds = [e["kind"] for e in host_events(lab, "host.*")]
    for k in ("host.reinstall", "host.power_pxe", "host.power_on"):
        assert k in kinds, kinds
