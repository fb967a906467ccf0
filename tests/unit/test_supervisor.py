import io
import logging
import threading
import time

from appliance.logs import LogfmtFormatter, redact
from appliance.runtime.supervisor import Supervisor


class Flaky:
    name = "flaky"

    def __init__(self, failures):
        self.failures = failures
        self.runs = 0

    def run(self, stop):
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        stop.wait()


class Stubborn:
    """Blocks in a socket-like wait that only shutdown() ends."""

    name = "stubborn"

    def __init__(self):
        self.released = threading.Event()

    def run(self, stop):
        self.released.wait()

    def shutdown(self):
        self.released.set()


def test_failing_service_is_restarted_with_backoff():
    svc = Flaky(failures=3)
    sup = Supervisor([svc], backoff_initial=0.05, backoff_max=0.2)
    sup.start()
    deadline = time.monotonic() + 5
    while svc.runs < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert svc.runs == 4
    assert sup.status["flaky"].backoffs == [0.05, 0.1, 0.2]  # doubling, capped at backoff_max
    h = sup.health()
    assert h["services"]["flaky"]["restarts"] == 3
    assert "boom 3" in h["services"]["flaky"]["last_error"]
    assert h["ok"]
    assert sup.stop(timeout=1)
    assert sup.health()["services"]["flaky"]["state"] == "stopped"


def test_stop_calls_shutdown_and_joins():
    svc = Stubborn()
    sup = Supervisor([svc])
    sup.start()
    time.sleep(0.05)
    assert sup.stop(timeout=1)
    assert svc.released.is_set()


def test_log_lines_are_logfmt_and_hide_secrets():
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(LogfmtFormatter())
    lg = logging.getLogger("nixie.test.logs")
    lg.addHandler(h)
    lg.propagate = False
    lg.warning("booting with nixie.token=abc123 now", extra={"host": "web1", "token": "s3cret"})
    line = buf.getvalue().strip()
    assert line.startswith("ts=") and "level=warning" in line and "logger=nixie.test.logs" in line
    assert "host=web1" in line
    assert "abc123" not in line and "s3cret" not in line
    assert redact("Authorization: Bearer xyz") == "Authorization: Bearer ***"
