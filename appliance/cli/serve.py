"""`nixie serve`: the appliance itself, or a stateless run over a hosts.json."""

from __future__ import annotations

import sys

from appliance.cli.context import Ctx
from appliance.cli.parser import CONFIG, Subparsers, leaf
from appliance.errors import UsageError
from appliance.logs import setup_logging
from appliance.runtime import stateless
from appliance.runtime.serve import serve
from appliance.state.db import Store


def cmd_serve(ctx: Ctx) -> int:
    cfg = ctx.cfg  # a bad config exits 2 before anything starts
    a = ctx.args
    setup_logging(a.log_level or cfg.log_level)
    if not a.hosts:
        return serve(cfg)
    try:
        text = open(a.hosts).read()
    except OSError as e:
        raise UsageError(f"cannot read {a.hosts}: {e.strerror}") from e
    cfg = stateless.stateless_config(cfg, a.state_dir)
    try:
        run = stateless.prepare(Store(cfg.db_path).conn(), text, a.flake)
        run.timeout = a.timeout
        code = serve(cfg, until=run.check, wake=run.names if a.wake else None)
        print(f"nixie: {run.reason or 'stopped'}", file=sys.stderr if code else sys.stdout)
        return code
    finally:
        if not a.state_dir:
            stateless.cleanup(cfg)


def register(sub: Subparsers) -> None:
    s = leaf(sub, "serve", cmd_serve,
             "run DHCP, TFTP, DNS, HTTP boot, the web UI and the build worker", [CONFIG])
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    st = s.add_argument_group("stateless mode (proxy-DHCP, temporary state; exits when done)")
    st.add_argument("--hosts", metavar="HOSTS_JSON", help="install/boot these hosts, then exit")
    st.add_argument("--flake", metavar="REF", help="flake for hosts.json entries that name none")
    st.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    st.add_argument("--state-dir", help="keep state here instead of a temporary directory")
    st.add_argument("--no-wake", dest="wake", action="store_false", help="do not send Wake-on-LAN")
