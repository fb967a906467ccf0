"""nixos-image/vm-test.nix (checks.x86_64-linux.vm-test) evaluated here with stand-ins for
nixpkgs and the NixOS test driver: its rendered Python test script compiles and uses the
driver's names, its router node's settings make a config `nixie config check` accepts,
and the flake the router builds the client from parses. Running it needs NixOS with KVM
(`nix flake check` / `nix build .#checks.x86_64-linux.vm-test`).
"""

from __future__ import annotations

import ast
import json
import re

import pytest

from tests.conftest import ROOT
from tests.nixeval import nix_eval, nix_parse, nix_reason, nix_str, settings_expr

pytestmark = pytest.mark.skipif(nix_reason() is not None, reason=str(nix_reason()))

DRIVER_NAMES = {"router", "create_machine", "subtest", "start_all"}


@pytest.fixture(scope="module")
def vmtest():
    return nix_eval(f"import {nix_str(ROOT / 'tests/data/nix/vm-test-eval.nix')} "
                    f"{{ root = {nix_str(ROOT)}; }}")


def test_script_is_python_using_the_driver(vmtest):
    script = vmtest["testScript"]
    tree = ast.parse(script)  # raises on a syntax error
    compile(tree, "vm-test testScript", "exec")
    assigned = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assigned |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assigned |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) for a in n.args.args}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    builtins_used = {"json", "print", "len"}
    assert used - assigned - imported - builtins_used <= DRIVER_NAMES, used - assigned - imported
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "create_machine"]
    assert len(calls) == 1 and isinstance(calls[0].args[0], ast.Constant), script
    cmd = calls[0].args[0].value
    assert "-boot order=n" in cmd and 'sock="$QEMU_VDE_SOCKET_1"' in cmd
    assert "mac=52:54:00:12:01:99" in cmd
    assert "host add client --mac 52:54:00:12:01:99" in script
    assert "'.state == \\\"booted\\\"'" in script or ".state == \\\"booted\\\"" in script


def test_router_node_settings_are_a_valid_config(vmtest, tmp_path, nixie):
    assert vmtest["routerImports"] == [str(ROOT / "nixos-image/router.nix")]
    assert vmtest["vlans"] == [1]
    assert vmtest["routerNixie"] == {"enable": True, "configureInterfaces": False,
                                     "ipxe": {"arm64": False}}
    values = json.dumps(vmtest["routerSettings"])
    written = nix_eval(settings_expr(f"builtins.fromJSON ''{values}''"))["config"]
    assert written["lan"] == {"interface": "eth1", "address": "192.168.1.1/24", "domain": "test",
                              "address6": None}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(written))
    r = nixie("config", "check", config=path)
    assert r.returncode == 0, r.stderr
    assert "/nix/store/stub-nixos-system-client" in vmtest["additionalPaths"]


def test_client_flake_in_the_router_parses(vmtest, tmp_path):
    script = vmtest["flakeScript"]
    body = re.search(r"cat > \$out/flake.nix <<'EOF'\n(.*?)\nEOF\n", script, re.S)
    assert body, script
    flake = tmp_path / "flake.nix"
    flake.write_text(body.group(1))
    r = nix_parse(flake)
    assert r.returncode == 0, r.stderr
    text = body.group(1)
    assert 'inputs.nixpkgs.url = "path:' in text and 'inputs.nixie.url = "path:' in text
    assert 'inputs.nixie.inputs.nixpkgs.follows = "nixpkgs";' in text
    assert "nixie.nixosModules.netboot-client ./client.nix" in text
    assert "cp /nix/store/" in script and "vm-test-client.nix $out/client.nix" in script
