"""A flake reference starting with `-` never reaches `nix` as an option (issue 15, finding 11).

Validation refuses it with a clear error, and the command line puts every reference after
`--`, which the real `nix` below proves: what follows `--` is read as a path, never a flag.
"""

from __future__ import annotations

import sqlite3

import pytest

from appliance.domain import flakes, hosts
from appliance.errors import InvalidInput
from appliance.nix.command import Nix, NixFailed
from appliance.state.db import Store
from tests.nixeval import nix_reason
from tests.nixlab import NIX_EXTRA

HOSTILE = ["--option", "-L", "--store=/tmp/x", "--refresh", "-foo#bar"]


@pytest.fixture
def conn(tmp_path) -> sqlite3.Connection:
    return Store(str(tmp_path / "nixie.db")).conn()


@pytest.mark.parametrize("ref", HOSTILE)
def test_validation_refuses_a_reference_that_reads_as_an_option(conn, ref):
    with pytest.raises(InvalidInput, match="must not start with '-'") as e:
        flakes.add_flake(conn, ref)
    assert e.value.field == "url"
    with pytest.raises(InvalidInput, match="must not start with '-'"):
        hosts.add_host(conn, "web1", ["52:54:00:00:00:01"], ref)
    assert conn.execute("SELECT count(*) FROM flakes").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM hosts").fetchone()[0] == 0


def test_hosts_json_entry_with_an_option_flake_is_refused(conn):
    with pytest.raises(InvalidInput, match="must not start with '-'"):
        hosts.import_hosts(conn, '{"web1": {"mac_address": "52:54:00:00:00:01", '
                                 '"flake": "--impure"}}')
    assert conn.execute("SELECT count(*) FROM hosts").fetchone()[0] == 0


def test_options_go_before_the_end_of_options_marker():
    nix = Nix(substituters=["http://cache.lan"], trusted_public_keys=["k:AAAA"])
    argv = nix.command(["nix", "flake", "metadata", "--json", "--", "github:o/r"])
    assert argv[1:] == ["flake", "metadata", "--json",
                        "--option", "extra-substituters", "http://cache.lan",
                        "--option", "extra-trusted-public-keys", "k:AAAA",
                        "--", "github:o/r"]


@pytest.mark.parametrize("ref", HOSTILE)
def test_the_wrapper_refuses_before_running_nix(tmp_path, ref):
    nix = Nix(bin_dir=str(tmp_path))  # no nix there: running anything would say so
    with pytest.raises(NixFailed, match="must not start with '-'"):
        nix.flake_metadata(ref)
    with pytest.raises(NixFailed, match="must not start with '-'"):
        nix.eval_json(f"{ref}#nixosConfigurations", apply="builtins.attrNames")


@pytest.mark.skipif(nix_reason() is not None, reason=str(nix_reason()))
def test_real_nix_reads_what_follows_the_marker_as_a_reference(tmp_path):
    """The wrapper's own argv with the check bypassed: `--version` and `--refresh` after
    `--` are flake paths to the real nix (no such directory), not flags."""
    nix = Nix(extra_config=NIX_EXTRA, substituters=["http://127.0.0.1:9"])
    for ref in ("--version", "--refresh"):
        with pytest.raises(NixFailed) as e:
            nix.run(["nix", "flake", "metadata", "--json", "--", ref])
        assert f"/{ref}" in str(e.value) and "unrecognised flag" not in str(e.value), e.value
    # and without the marker the same word is an option: what the marker prevents
    out = nix.run(["nix", "--version"])
    assert out.startswith("nix (Nix)")
