"""A web worker process (`python -m appliance.runtime.web_worker`): started by
`WebWorkers` in `nixie serve` (a netservices/workerpool.py pool), it serves the
admin web UI on the listen sockets it inherits. Its settings come as one JSON
line on stdin; stdin's end (serve gone, even by SIGKILL), SIGTERM and serve's
death (PR_SET_PDEATHSIG) stop it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

from appliance.config.schema import parse_config
from appliance.logs import setup_logging
from appliance.runtime.stopsignal import StopSignal
from appliance.runtime.webserver import STOP_GRACE_SECONDS, make_web_server, stored_health
from appliance.runtime.wiring import web_app
from appliance.state.db import Store
from appliance.state.status import STALE_SECONDS
from netservices.workerpool import join_pool, on_parent_gone

log = logging.getLogger("nixie.web")


def worker_main() -> int:
    settings = join_pool()
    setup_logging(settings["log_level"])
    server = None
    done = threading.Event()
    once = threading.Lock()

    def finish() -> None:
        if not once.acquire(blocking=False):
            return  # another thread is finishing: it ends the process
        done.set()
        if server is not None:
            server.close()  # no new connections; the answers being written finish
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_GRACE_SECONDS / 2)
        os._exit(0)

    # watching from the start: a worker still starting must not keep the port from a new serve
    on_parent_gone(finish)
    # the handler only records the signal (see stopsignal); a thread of ours acts on it
    term = StopSignal().install(signal.SIGTERM)
    threading.Thread(target=lambda: term.wait() and finish(), name="sigterm-watch",
                     daemon=True).start()
    cfg = parse_config(settings["config"], settings["config_path"])
    socks = [socket.socket(fileno=fd) for fd in settings["fds"]]
    store = Store(cfg.db_path)
    app = web_app(cfg, store, lambda: stored_health(store, STALE_SECONDS))
    server = make_web_server(app, cfg, sockets=socks)
    if done.is_set():  # serve went away while we started
        server.close()
        os._exit(0)
    log.info("web worker serving", extra={"pid": os.getpid(), "listen": ",".join(
        str(s.getsockname()[0]) + ":" + str(s.getsockname()[1]) for s in socks)})
    try:
        server.run()
    except (OSError, ValueError):
        if not done.is_set():  # not the sockets finish() closed under the loop
            raise
    finish()  # returns at once when another thread is finishing: it ends the process
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
