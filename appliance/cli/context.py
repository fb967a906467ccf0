"""What every verb works on: the config file, the configuration `nixie serve` runs
with, and the state DB they share."""

from __future__ import annotations

import argparse
import sqlite3
from functools import cached_property

from appliance.config.schema import Config, load_config
from appliance.domain import settings
from appliance.state.db import Store


class Ctx:
    """One invocation of `nixie`; each part is made on first use, once.

    `cfg` is the config file itself: for what the file is meant (check it, the
    base settings are stored over, where the state lives). `runtime_cfg` is what
    `nixie serve` runs with: the file with the admin's stored overrides and the
    confirmed network settings (`settings.effective_config`) as they were when a
    verb first asked; verbs that act like the running appliance (nix, the LAN, the
    firewall, Wake-on-LAN) use it."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    @cached_property
    def cfg(self) -> Config:
        return load_config(self.args.config)

    @cached_property
    def store(self) -> Store:
        return Store(self.cfg.db_path)

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn()

    @cached_property
    def runtime_cfg(self) -> Config:
        return settings.effective_config(self.cfg, self.conn)
