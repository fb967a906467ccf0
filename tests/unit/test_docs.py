"""The docs say true things that a test can check: every repository path they name
exists, every `nixie ...` command in their code blocks parses with the real
parser, every config key they name is in the schema, and no made-up forge
(`github:your-org/...`) is left in them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from appliance.cli.main import build_parser
from appliance.config.schema import iter_keys
from appliance.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("hw/*.md"),
               *ROOT.glob("nixos-image/*.md")])
TOP = ("appliance", "webui", "netservices", "tests", "lab", "bench", "scripts", "nixos-image",
       "hw", "docs", "examples")
PATH = re.compile(r"`((?:" + "|".join(TOP) + r")/[\w./-]+\.(?:py|nix|md|sh|txt|json|js|html))`")
KEY = re.compile(r"`((?:builder|vpn)\.[a-z_]+)`")


def test_docs_exist():
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"docs/cli.md", "docs/api.md", "docs/remote-builder.md", "docs/vpn.md"} <= names
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_paths_exist_and_no_made_up_forge(doc):
    text = doc.read_text()
    missing = [m for m in PATH.findall(text) if not (ROOT / m).exists()]
    assert missing == []
    assert "your-org" not in text


def _nixie_commands(text: str):
    """The `nixie` lines of the shell code blocks (```sh, ```bash or plain ```)."""
    in_block = shell = False
    for line in text.replace("\\\n", " ").splitlines():  # continued lines joined
        if line.startswith("```"):
            in_block, shell = not in_block, not in_block and line[3:].strip() in (
                "", "sh", "bash", "console")
            continue
        line = line.split(" #", 1)[0].strip()
        if shell and line.startswith("nixie "):
            yield shlex.split(line.split(" > ")[0])[1:]


@pytest.mark.parametrize("doc", [ROOT / "docs" / n for n in
                                 ("cli.md", "remote-builder.md", "vpn.md", "bmc.md")],
                         ids=lambda p: p.name)
def test_walkthrough_commands_parse(doc):
    commands = list(_nixie_commands(doc.read_text()))
    assert commands or doc.name == "bmc.md"
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except UsageError as e:
            raise AssertionError(f"{doc.name}: nixie {' '.join(argv)}: {e}") from None


def test_walkthrough_config_keys_are_real():
    known = {k for k, _ in iter_keys()}
    for name in ("remote-builder.md", "vpn.md"):
        named = set(KEY.findall((ROOT / "docs" / name).read_text()))
        assert named and named <= known, (name, named - known)
