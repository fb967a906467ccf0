"""Calling the real `nix` CLI: one place that knows its flags and environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

BASE_NIX_CONFIG = "experimental-features = nix-command flakes"
# Nix as a single user (root) on a machine that is not NixOS and is offline:
# no nixbld group, no sandbox, no substituters. The lab and the tests use it.
SINGLE_USER_OFFLINE = "build-users-group =\nsandbox = false\nsubstituters =\nwarn-dirty = false"


class NixFailed(Exception):
    """A nix command failed; the message is Nix's own error text."""


def check_reference(ref: str) -> str:
    """A flake reference or installable as Nix may be given it: never something `nix`
    would parse as an option (the callers also put it after `--`)."""
    if not isinstance(ref, str) or not ref or ref.startswith("-"):
        raise NixFailed(f"{ref!r} is not a flake reference (it must not start with '-')")
    return ref


@dataclass
class Nix:
    bin_dir: str | None = None
    store: str | None = None
    extra_config: str = ""
    substituters: list[str] = field(default_factory=list)
    trusted_public_keys: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg) -> Nix:
        return cls(bin_dir=cfg.nix.bin_dir, store=cfg.nix.store, extra_config=cfg.nix.extra_config,
                   substituters=list(cfg.builder.substituters),
                   trusted_public_keys=list(cfg.builder.trusted_public_keys))

    def exe(self, name: str) -> str:
        if self.bin_dir:
            return os.path.join(self.bin_dir, name)
        return shutil.which(name) or name

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        lines = [BASE_NIX_CONFIG]
        if env.get("NIX_CONFIG"):
            lines.append(env["NIX_CONFIG"])
        if self.extra_config:
            lines.append(self.extra_config)
        env["NIX_CONFIG"] = "\n".join(lines)
        return env

    def option_args(self) -> list[str]:
        """The builder's binary caches as `nix` options, on the command line (so the
        build log shows them): `builder.substituters`, `builder.trusted_public_keys`."""
        out = []
        if self.substituters:
            out += ["--option", "extra-substituters", " ".join(self.substituters)]
        if self.trusted_public_keys:
            out += ["--option", "extra-trusted-public-keys", " ".join(self.trusted_public_keys)]
        return out

    def store_args(self) -> list[str]:
        return ["--store", self.store] if self.store else []

    def command(self, args: list[str]) -> list[str]:
        """The argv of `args` (program name first): for `nix`, the builder's options go
        before a `--`, so whatever follows it (flake references, installables) can only be
        an argument, never an option."""
        opts = self.option_args() if args[0] == "nix" else []
        end = args.index("--") if "--" in args else len(args)
        return [self.exe(args[0]), *args[1:end], *opts, *args[end:]]

    def run(self, args: list[str], *, timeout: float | None = 600) -> str:
        cmd = self.command(args)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout)
        except FileNotFoundError:
            raise NixFailed(f"{args[0]} is not installed (looked for {cmd[0]})") from None
        except subprocess.TimeoutExpired:
            raise NixFailed(f"{' '.join(args[:3])} timed out after {timeout} s") from None
        if p.returncode != 0:
            raise NixFailed(p.stderr.strip() or f"{args[0]} exited {p.returncode}")
        return p.stdout

    def eval_json(self, installable: str, apply: str | None = None) -> Any:
        args = ["nix", "eval", "--json", *self.store_args()]
        if apply:
            args += ["--apply", apply]
        return json.loads(self.run([*args, "--", check_reference(installable)]))

    def flake_metadata(self, url: str) -> dict[str, Any]:
        return json.loads(self.run(["nix", "flake", "metadata", "--json", *self.store_args(),
                                    "--", check_reference(url)]))
