"""The package layering, read from the source: the domain (`app`) never imports the worker
(`fanout`) or the entry points (`entrypoints`), which wire it from the edge."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Packages that sit outside the domain and import it; an import back would be a cycle in layers.
OUTER_PACKAGES = ("fanout", "entrypoints")


def imported_modules(path: Path) -> list[str]:
    """Every module an `import` or `from ... import` in `path` names (relative ones resolved
    against `app` would still start with `app`, so they are kept as written)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.append(node.module)
    return names


def test_imported_modules_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import fanout.worker\n"
        "from entrypoints import cli\n"
        "def f():\n"
        "    from fanout.worker import WorkerPool\n"
    )
    assert imported_modules(source) == ["fanout.worker", "entrypoints", "fanout.worker"]


@pytest.mark.parametrize("path", sorted((ROOT / "app").rglob("*.py")), ids=lambda p: p.name)
def test_app_imports_no_outer_package(path: Path) -> None:
    outward = [name for name in imported_modules(path) if name.split(".")[0] in OUTER_PACKAGES]
    assert outward == [], f"{path.relative_to(ROOT)} imports {outward}"


def test_importing_the_storage_boundary_patches_nothing() -> None:
    """The PyMongo workaround is applied by the entry points, not as a side effect of `app.db`."""
    code = (
        "import app.db, pymongo.lock, app.pymongo_compat as c;"
        "print(pymongo.lock._async_cond_wait is c._cond_wait)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# The packages that run outside the declarations and migrations: they get their collections
# from a Store bound at start-up (app.store), never from Beanie's one-per-process class binding.
RUNTIME_PACKAGES = ("app", "fanout", "entrypoints", "benchmarks")


def runtime_sources() -> list[Path]:
    return sorted(p for d in RUNTIME_PACKAGES for p in (ROOT / d).rglob("*.py"))


def test_collections_are_passed_in_not_reached_through_beanie() -> None:
    sources = runtime_sources()
    assert len(sources) > 50  # the scan found the packages
    bound = [
        f"{p.relative_to(ROOT)}:{node.lineno}"
        for p in sources
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p)))
        if isinstance(node, ast.Attribute) and node.attr == "get_pymongo_collection"
    ]
    assert bound == []


# STYLE.md: split a file that grows past ~500 lines, by concern. A size is a hint to look, never
# a reason to cut one class in two, so the bound is STYLE.md's, not a tighter one to fit.
MAX_MODULE_LINES = 500
# Functions of ~60 lines at most: one screen, so a reader sees a whole function at once.
MAX_FUNCTION_LINES = 60


def test_no_module_is_too_long() -> None:
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in runtime_sources()}
    assert {p: n for p, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_is_too_long() -> None:
    long = []
    for p in runtime_sources():
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert long == []
