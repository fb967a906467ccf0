"""What every verb works on: the config file, the configuration `nixie serve` runs
with, and the state DB they share."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable

from appliance.config.schema import Config, load_config
from appliance.domain import settings
from appliance.state.db import Store

# `leaf(parent, name, func, help, parents=[common, listing])`: one verb's subparser
Leaf = Callable[..., argparse.ArgumentParser]


class Ctx:
    """One invocation of `nixie`.

    `cfg` is the config file itself: for what the file is meant (check it, the
    base settings are stored over, where the state lives). `runtime_cfg` is what
    `nixie serve` runs with: the file with the admin's stored overrides and the
    confirmed network settings (`settings.effective_config`); verbs that act like
    the running appliance (nix, the LAN, the firewall, Wake-on-LAN) use it."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._cfg: Config | None = None
        self._store: Store | None = None

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = load_config(self.args.config)
        return self._cfg

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.cfg.db_path)
        return self._store

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn()

    @property
    def runtime_cfg(self) -> Config:
        """Resolved from the DB on each use: a verb that changes settings sees its change."""
        return settings.effective_config(self.cfg, self.conn)
