"""The layout, enforced by machine.

- The import contracts in pyproject.toml ([tool.importlinter]: the appliance layers
  cli > runtime > (router | nix) > domain > state > config, netservices standalone, webui
  below the runtime, the lab outside the product) hold, checked by the real `lint-imports`.
- The checker catches a forbidden import: the same contracts run over a copy of the tree with
  one bad import added fail, naming the contract broken.
- No first-party import inside a function or method (imports at module top: a cycle shows
  itself instead of being dodged).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("appliance", "webui", "netservices", "lab")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: pip install -e '.[test]'"
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd),
                                          "NO_COLOR": "1", "COLUMNS": "200"})


def broken_contracts(output: str) -> set[str]:
    return {line.removesuffix(" BROKEN").strip() for line in output.splitlines()
            if line.rstrip().endswith(" BROKEN")}


def test_import_contracts_hold():
    r = lint_imports(ROOT)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"lint-imports failed:\n{out}"
    assert "6 kept, 0 broken" in out, out  # every contract in pyproject.toml was checked


@pytest.mark.parametrize(("victim", "line", "contract"), [
    ("appliance/domain/hosts.py", "import appliance.runtime.wiring  # noqa",
     "appliance layers: cli > runtime > (router | nix) > domain > state > config"),
    ("webui/forms.py", "import netservices  # noqa", "webui never imports netservices"),
    ("netservices/listen.py", "import appliance.errors  # noqa",
     "netservices imports nothing of appliance, webui, lab"),
    ("appliance/router/wol.py", "import appliance.nix.cpio  # noqa",
     "appliance.router and appliance.nix do not import each other"),
    ("appliance/state/kv.py", "import lab  # noqa",
     "nothing in appliance, webui or netservices imports lab"),
])
def test_checker_catches_a_forbidden_import(tmp_path, victim, line, contract):
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / victim, "a") as f:
        f.write(f"\n{line}\n")
    r = lint_imports(tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"lint-imports passed with {line!r} in {victim}:\n{out}"
    assert contract in broken_contracts(out), out
    assert victim.removesuffix(".py").replace("/", ".") in out, out


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, path: Path, root: Path) -> list[str]:
    """The first-party modules an import statement names (relative ones resolved)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level:
        package = _module_name(path, root).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        base = package[:len(package) - node.level + 1]
        names = [".".join(base + ([node.module] if node.module else []))]
    else:
        names = [node.module or ""]
    return [n for n in names if n.split(".")[0] in PACKAGES]


def function_level_imports(root: Path) -> set[tuple[str, str, int]]:
    """(file, first-party module, line) of every import inside a function, method or lambda."""
    found = set()
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        for mod in _imported(node, path, root):
                            found.add((str(path.relative_to(root)), mod, node.lineno))
    return found


def test_first_party_imports_are_at_module_top():
    offenders = sorted(function_level_imports(ROOT))
    assert not offenders, "first-party imports inside a function (move them to the module top):\n" \
        + "\n".join(f"  {f}:{line}: import {mod}" for f, mod, line in offenders)


def test_the_ast_walk_sees_function_level_imports(tmp_path):
    """The check above catches them: relative and absolute, in a method, a nested function, a
    lambda; a module-top import and a third-party one inside a function are not offenders."""
    pkg = tmp_path / "webui" / "views"
    pkg.mkdir(parents=True)
    (tmp_path / "webui" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "late.py").write_text(
        "import appliance.errors\n"
        "class A:\n"
        "    def f(self):\n"
        "        from ..forms import x\n"
        "        import json\n"
        "def g():\n"
        "    def h():\n"
        "        from . import common\n"
        "    return lambda: __import__('os')\n"
        "async def k():\n"
        "    import appliance.domain.hosts\n")
    assert function_level_imports(tmp_path) == {
        ("webui/views/late.py", "webui.forms", 4),
        ("webui/views/late.py", "webui.views", 8),
        ("webui/views/late.py", "appliance.domain.hosts", 11),
    }


def test_ruff_is_clean():
    """ruff's rules, complexity (mccabe) included, hold for the whole tree."""
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), f"{ruff} missing: pip install -e '.[test]'"
    r = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
