"""scripts/setup-system.sh (`make setup`) in a container where /proc/1 is unreadable, as in CI.

The script runs for real under bash with a PATH of shims: `dpkg-query` reports the packages
installed or not, `apt-get` records what it would install (nothing is installed), `readlink`
fails on /proc/*/ns/net, `pgrep` names a `sleep` this test started as the packaged daemon and
`ps` says init is its parent. The script must exit 0 and that process must still be alive: with
no host namespace to tell apart there is nothing it may stop.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup-system.sh"
WANTED = [line.strip() for line in (ROOT / "scripts" / "apt-packages.txt").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]

SHIMS = {
    # installed unless named in $SHIM_MISSING (space separated)
    "dpkg-query": """echo "dpkg-query $*" >> "$SHIM_LOG"
pkg="${@: -1}"
case " $SHIM_MISSING " in
  *" $pkg "*) echo "dpkg-query: no packages found matching $pkg" >&2; exit 1 ;;
esac
printf 'install ok installed'
""",
    "apt-get": """echo "apt-get $* policy=$(test -x "$NIXIE_POLICY_RC_D" && cat "$NIXIE_POLICY_RC_D" | tail -1)" >> "$SHIM_LOG"
""",
    "id": """[ "$1" = -u ] && echo 0 || exec /usr/bin/id "$@"
""",
    "readlink": """echo "readlink $*" >> "$SHIM_LOG"
case "$1" in
  /proc/*/ns/net) [ "$SHIM_PROC" = unreadable ] && exit 1; echo 'net:[4026531840]' ;;
  *) exec /usr/bin/readlink "$@" ;;
esac
""",
    "pgrep": """echo "pgrep $*" >> "$SHIM_LOG"
[ "${@: -1}" = nginx ] && echo "$SHIM_VICTIM"
exit 0
""",
    "ps": """echo "ps $*" >> "$SHIM_LOG"
echo '    1'
""",
}


@pytest.fixture
def victim():
    """A process of ours the shims pass off as a packaged nginx started by init."""
    p = subprocess.Popen(["sleep", "300"])
    yield p
    p.kill()
    p.wait()


def run_setup(tmp_path: Path, victim: subprocess.Popen, *, missing: list[str], proc: str):
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, body in SHIMS.items():
        (shims / name).write_text("#!/bin/bash\n" + body)
        (shims / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    policy = tmp_path / "policy-rc.d"
    env = {"PATH": f"{shims}:/usr/bin:/bin", "SHIM_LOG": str(log), "SHIM_MISSING": " ".join(missing),
           "SHIM_PROC": proc, "SHIM_VICTIM": str(victim.pid), "NIXIE_POLICY_RC_D": str(policy)}
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines()
    return r, calls, policy


def test_all_installed_and_proc1_unreadable(tmp_path, victim):
    r, calls, policy = run_setup(tmp_path, victim, missing=[], proc="unreadable")
    assert r.returncode == 0, r.stderr
    assert f"all {len(WANTED)} packages present" in r.stdout
    assert [c.split()[-1] for c in calls if c.startswith("dpkg-query")] == WANTED
    assert not [c for c in calls if c.split()[0] in ("apt-get", "pgrep", "ps")], calls
    assert victim.poll() is None, "setup-system killed a process"
    assert not policy.exists()


def test_missing_packages_installed_and_proc1_unreadable(tmp_path, victim):
    missing = [WANTED[2], WANTED[-1]]
    r, calls, policy = run_setup(tmp_path, victim, missing=missing, proc="unreadable")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"installing {' '.join(missing)}" in r.stdout
    apt = [c for c in calls if c.startswith("apt-get")]
    # daemons kept from starting while apt runs (policy-rc.d exits 101), the file gone after
    assert apt == ["apt-get update -q policy=exit 101",
                   f"apt-get install -y -q --no-install-recommends {' '.join(missing)} "
                   "policy=exit 101"], calls
    assert not policy.exists()
    assert "readlink /proc/1/ns/net" in calls
    assert not [c for c in calls if c.split()[0] in ("pgrep", "ps")], calls
    assert victim.poll() is None, "setup-system killed a process"


def test_with_proc1_readable_a_packaged_daemon_of_init_is_stopped(tmp_path, victim):
    """The shims can show a kill: where /proc/1 is readable and the daemon shares init's
    namespace with init as its parent, the script stops it."""
    r, calls, _ = run_setup(tmp_path, victim, missing=[WANTED[0]], proc="readable")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pgrep -x nginx" in calls
    assert victim.wait(timeout=10) == -15  # SIGTERM
