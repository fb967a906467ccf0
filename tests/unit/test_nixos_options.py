"""The NixOS module's options mirror the JSON config schema, checked with the real Nix
evaluator (nix-instantiate) on nixos-image/settings.nix and a stand-in lib.

What this proves: every SCHEMA key has an option with the same dotted name and the same
default; each option's type accepts every probe value the Python checker accepts, and
agrees with it on null, booleans, integer bounds and enum choices; the JSON the module
writes from the defaults is exactly the Python defaults and passes `nixie config check`;
every .nix file of the repository parses.
"""

from __future__ import annotations

import json

import pytest

from appliance.config import schema as C
from tests.conftest import ROOT
from tests.nixeval import (
    nix_eval,
    nix_files,
    nix_parse,
    nix_reason,
    settings_expr,
    type_checks_expr,
)

pytestmark = pytest.mark.skipif(nix_reason() is not None, reason=str(nix_reason()))


@pytest.fixture(scope="module")
def nix_settings():
    return nix_eval(settings_expr())


@pytest.fixture(scope="module")
def nix_keys(nix_settings):
    return {k["key"]: k for k in nix_settings["keys"]}


def schema_keys():
    return dict(C.iter_keys())


def _closure(check, name):
    names = check.__code__.co_freevars
    if check.__closure__ is None or name not in names:
        return None
    return check.__closure__[names.index(name)].cell_contents


def suggested_nix_type(check) -> str:
    """The settings.nix type for a SCHEMA checker (used in failure messages)."""
    lo, hi = _closure(check, "lo"), _closure(check, "hi")
    if lo is not None:
        return f"(between {lo} {hi})"
    choices = _closure(check, "choices")
    if choices is not None:
        return "(types.enum [ " + " ".join(f'"{c}"' for c in choices) + " ])"
    return {
        C.check_str: "str", C.check_opt_str: "optStr", C.check_bool: "types.bool",
        C.check_path: "path", C.check_opt_path: "optPath", C.check_cidr: "cidr",
        C.check_opt_cidr: "(types.nullOr cidr)", C.check_listen: "listen",
        C.check_listen_list: "listenList", C.check_str_list: "listOfStr",
        C.check_upstreams: "(types.listOf str)", C.check_ipv4: "ipv4",
        C.check_range: "(types.addCheck (types.listOf ipv4) (l: builtins.length l == 2))",
    }.get(check, "FIXME-type")


def nix_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[ " + " ".join(nix_value(x) for x in v) + " ]" if v else "[ ]"
    return json.dumps(v)


def suggested_line(dotted: str, key: C.Key) -> str:
    name = dotted.rpartition(".")[2]
    return (f"{dotted}:  {name} = opt {suggested_nix_type(key.check)} {nix_value(key.default)} "
            f"{json.dumps(key.doc)};")


@pytest.mark.parametrize("path", nix_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_nix_file_parses(path):
    r = nix_parse(path)
    assert r.returncode == 0, r.stderr


def test_the_nix_files_are_all_found():
    found = {str(p.relative_to(ROOT)) for p in nix_files()}
    assert {"flake.nix", "nixos-image/settings.nix", "nixos-image/router.nix",
            "nixos-image/netboot-client.nix", "nixos-image/installer.nix"} <= found


def test_every_schema_key_has_an_option_and_no_more(nix_keys):
    schema = schema_keys()
    missing = sorted(set(schema) - set(nix_keys))
    extra = sorted(set(nix_keys) - set(schema))
    assert not missing, ("SCHEMA keys with no option in nixos-image/settings.nix; add:\n  "
                         + "\n  ".join(suggested_line(k, schema[k]) for k in missing))
    assert not extra, f"options in nixos-image/settings.nix that SCHEMA does not have: {extra}"


def test_option_defaults_equal_schema_defaults(nix_keys):
    schema = schema_keys()
    wrong = {k: (nix_keys[k]["default"], schema[k].default)
             for k in set(schema) & set(nix_keys) if nix_keys[k]["default"] != schema[k].default}
    assert not wrong, f"(nix default, SCHEMA default) differ: {wrong}"


def test_every_option_is_described_and_its_default_fits_its_type(nix_keys):
    assert [k for k, v in nix_keys.items() if not v["described"]] == []
    assert [k for k, v in nix_keys.items() if not v["defaultTypeChecks"]] == []


def test_enum_and_int_bounds_match_the_checkers(nix_keys):
    for dotted, key in schema_keys().items():
        t = nix_keys[dotted]["type"]
        choices = _closure(key.check, "choices")
        if choices is not None:
            assert t["name"] == "enum" and t["values"] == list(choices), dotted
        lo, hi = _closure(key.check, "lo"), _closure(key.check, "hi")
        if lo is not None:
            assert (t["name"], t["lo"], t["hi"]) == ("intBetween", lo, hi), dotted


PROBES = [
    None, True, False, 0, 1, 5, -1, 60, 3600, 65535, 65536, 31536000, 31536001, 2592001,
    "", "x", "eth0", "/var/lib/nixie", "10.0.0.1", "10.0.0.1/24", "10.0.0.0/24", "300.1.1.1",
    "0.0.0.0:69", "10.77.0.1:8080", "[::]:53", "::1:53", "1.1.1.1:53", "local", "remote",
    "menu", "ignore", "proxy", "off", "authoritative", "debug", "error", "zzz",
    "ssh-ng://nix@builder", "https://cache.example/ key", "x86_64-linux",
    [], ["x"], ["0.0.0.0:69"], ["10.0.0.1:53", "[::1]:53"], ["10.0.0.100", "10.0.0.199"],
    ["10.0.0.100"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["1.1.1.1", "9.9.9.9:53"],
    ["x86_64-linux", "aarch64-linux"], [""], [1], {"a": 1},
]


def python_accepts(key: C.Key, dotted: str, value) -> bool:
    try:
        key.check(dotted, value)
        return True
    except C.ConfigError:
        return False


def test_nix_types_accept_what_the_checkers_accept(nix_keys, tmp_path):
    probes_file = tmp_path / "probes.json"
    probes = PROBES + [k.default for _, k in C.iter_keys()]
    probes_file.write_text(json.dumps(probes))
    verdicts = {v["key"]: v["accepts"] for v in nix_eval(type_checks_expr(probes_file))}
    problems = []
    for dotted, key in schema_keys().items():
        for probe, nix_ok in zip(probes, verdicts[dotted], strict=True):
            py_ok = python_accepts(key, dotted, probe)
            if py_ok and not nix_ok:
                problems.append(f"{dotted}: Python accepts {probe!r}, the Nix type refuses it")
            # where the JSON kind decides (null, bool, int), they must agree both ways
            if probe is None or isinstance(probe, bool | int):
                if nix_ok and not py_ok:
                    problems.append(f"{dotted}: the Nix type accepts {probe!r}, Python refuses it")
    assert not problems, "\n".join(problems)


def test_written_config_from_defaults_is_the_python_defaults(nix_settings, tmp_path, nixie):
    written = nix_settings["config"]
    assert written == C.defaults()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(written))
    r = nixie("config", "check", "--json", config=path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == C.parse_config({}).to_dict()  # listeners on the LAN address
    assert json.loads(r.stdout)["web"]["listen"] == ["10.0.0.1:8080"]


def test_written_config_carries_overrides_and_only_option_keys(tmp_path, nixie):
    values = """{
      state_dir = "/srv/nixie"; log_level = "debug";
      lan = { interface = "enp2s0"; address = "192.168.50.1/24"; };
      dhcp.range = [ "192.168.50.100" "192.168.50.250" ];
      web.listen = "192.168.50.1:8080";
      builder = { kind = "remote"; uri = "ssh-ng://nix@builder"; max_jobs = 4; };
    }"""
    written = nix_eval(settings_expr(values))["config"]
    assert set(written) == set(C.defaults())
    assert written["lan"] == {"interface": "enp2s0", "address": "192.168.50.1/24", "domain": "lan",
                              "address6": None}
    assert written["builder"]["max_jobs"] == 4 and written["builder"]["systems"] == ["x86_64-linux"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(written))
    r = nixie("config", "check", "--json", config=path)
    assert r.returncode == 0, r.stderr
    parsed = json.loads(r.stdout)
    assert parsed["web"]["listen"] == ["192.168.50.1:8080"]  # the single-string form
    assert parsed["builder"]["kind"] == "remote"


def test_a_missing_key_is_reported_with_the_line_to_add():
    key = C.Key(C.int_range(1, 1000), 10, "Generations kept per host.")
    line = suggested_line("builder.keep_generations", key)
    assert line == ('builder.keep_generations:  keep_generations = opt (between 1 1000) 10 '
                    '"Generations kept per host.";')
