"""`nixie`'s conventions across verbs, as real subprocesses: --json on every verb that
answers (also the remove verbs and errors, `{"error": ..., "code": ...}`), exit codes
0 ok / 1 failure / 2 usage or config (docs/cli.md), --version, and shell completion
that a real bash completes with."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from appliance import __version__
from appliance.cli.main import build_parser
from tests.conftest import NIXIE, ROOT, run_nixie


def test_version():
    r = run_nixie("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"nixie {__version__}"


@pytest.mark.parametrize("argv, code, kind", [
    (["host", "frobnicate"], 2, "usage"),                     # no such sub-verb
    (["host", "add", "x"], 2, "usage"),                       # a required option missing
    (["build"], 2, "usage"),
    (["host", "show", "nope"], 1, "not_found"),
    (["flake", "remove", "github:nobody/none"], 1, "not_found"),
    (["vpn", "remove", "nobody"], 1, "not_found"),
    (["build", "cancel", "7"], 1, "not_found"),
    (["host", "add", "bad name!", "--mac", "52:54:00:00:00:09", "--flake", "x"], 1, "invalid"),
    (["admin", "remove-user", "nobody"], 1, "not_found"),
])
def test_errors_exit_codes_and_json(config_file, argv, code, kind):
    r = run_nixie(*argv, config=config_file)
    assert r.returncode == code, r.stderr
    assert r.stdout == "" and r.stderr.startswith("nixie: ")
    r = run_nixie(*argv, "--json", config=config_file)
    assert r.returncode == code
    doc = json.loads(r.stdout)
    assert doc["code"] == kind and doc["error"] and r.stderr == ""


def test_a_bad_config_file_is_exit_2_with_json(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"state_dir": 5}')
    r = run_nixie("host", "list", "--json", config=bad)
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["code"] == "config" and "state_dir" in doc["error"]
    r = run_nixie("host", "list", config=tmp_path / "missing.json")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_remove_verbs_answer_json(config_file):
    assert run_nixie("host", "add", "web1", "--mac", "52:54:00:00:00:01", "--flake", "github:o/r",
                     config=config_file).returncode == 0
    r = run_nixie("host", "remove", "web1", "--json", config=config_file)
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"ok": True, "message": "removed host web1", "name": "web1"}
    assert run_nixie("host", "list", "--json", config=config_file).stdout.strip() == "[]"
    r = run_nixie("vpn", "add", "laptop", config=config_file)
    assert r.returncode == 0, r.stderr
    r = run_nixie("vpn", "remove", "laptop", "--json", config=config_file)
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "laptop"
    for name in ("root", "ops"):
        r = run_nixie("admin", "create-user", name, "--password-stdin", "--json",
                      config=config_file, input="a long enough password\n")
        assert r.returncode == 0 and json.loads(r.stdout)["username"] == name
    r = run_nixie("admin", "remove-user", "ops", "--json", config=config_file)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True


def _walk(p, path=()):
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, child in a.choices.items():
                yield (*path, name), child
                yield from _walk(child, (*path, name))


def test_every_leaf_takes_json_or_says_why():
    """Every verb that runs takes --json, apart from those whose output is a file or a
    stream for another program."""
    exempt = {("serve",),  # a daemon: logfmt on stderr
              ("completion",),  # a shell script
              ("firewall",),  # the nftables ruleset, input to nft
              ("net", "watchdog"),  # the detached rollback watchdog, prints nothing
              ("config", "example")}  # prints a JSON config file already
    missing = []
    for path, p in _walk(build_parser()):
        is_leaf = not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        if is_leaf and path not in exempt and "--json" not in p._option_string_actions:
            missing.append(" ".join(path))
    assert missing == []


def _complete(line: str) -> list[str]:
    """What bash completes for `line` (the cursor at its end), with the script sourced."""
    script = run_nixie("completion", "bash").stdout
    words = line.split(" ")
    prog = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
            f"COMP_CWORD={len(words) - 1}\n"
            "_nixie\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
            "complete -p nixie\n")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True,
                       text=True, timeout=20, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[-1] == "complete -F _nixie nixie"  # bash registered it
    return out[:-1]


def test_bash_completes_verbs_sub_verbs_and_options(tmp_path):
    assert _complete("nixie bu") == ["build", "builds"]
    assert _complete("nixie build ") == ["start", "list", "show", "log", "cancel"]
    assert _complete("nixie host re") == ["remove", "reinstall"]
    assert "--mac" in _complete("nixie host add web1 --")
    assert _complete("nixie --config /etc/x.json lea") == ["lease"]
    # a file after --config
    (tmp_path / "conf-one.json").write_text("{}")
    assert _complete(f"nixie --config {tmp_path}/conf-") == [f"{tmp_path}/conf-one.json"]


def test_bash_completes_through_complete_builtin_in_an_interactive_shell():
    """The script as a user sources it: `compgen -F`-style through `complete -p`."""
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c",
                        "source <(\"$@\" completion bash) && complete -p nixie && "
                        "COMP_WORDS=(nixie wo) COMP_CWORD=1 && _nixie && echo ${COMPREPLY[*]}",
                        "bash", *NIXIE],
                       capture_output=True, text=True, timeout=30, cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["complete -F _nixie nixie", "wol"]


def test_zsh_script_is_the_bash_one_through_bashcompinit():
    r = run_nixie("completion", "zsh")
    assert r.returncode == 0
    assert r.stdout.startswith("#compdef nixie") and "bashcompinit" in r.stdout
    assert "complete -F _nixie nixie" in r.stdout


def test_json_is_the_parsed_option_not_an_argument_spelt_json(config_file):
    """A positional argument "--json" (after `--`) is a value, not the option: the error
    about it is a human line on stderr, not a JSON document on stdout."""
    r = subprocess.run([*NIXIE, "host", "show", "--config", str(config_file), "--", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.startswith("nixie: ") and "--json" in r.stderr, r.stderr
    # the option itself, before or after the verb, still gives JSON (also for usage errors)
    for argv in (["--json", "host", "show", "nope"], ["host", "show", "nope", "--json"],
                 ["host", "frobnicate", "--json"]):
        r = run_nixie(*argv, config=config_file)
        assert r.returncode in (1, 2) and json.loads(r.stdout)["code"] in ("not_found", "usage")
