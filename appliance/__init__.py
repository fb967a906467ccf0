"""Nixie Router core: configuration, state, Nix, builds, orchestration, CLI."""

__version__ = "0.1.0"
