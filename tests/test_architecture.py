"""The package layering, read from the source: the domain (`app`) never imports the worker
(`fanout`) or the entry points (`entrypoints`), which wire it from the edge."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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
    """The PyMongo workaround is applied by the entry points, not as a side effect of
    `app.storage.db`."""
    code = (
        "import app.storage.db, pymongo.lock, app.storage.pymongo_compat as c;"
        "print(pymongo.lock._async_cond_wait is c._cond_wait)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# The packages that run outside the declarations and migrations: they get their collections
# from a Store bound at start-up (app.storage.store), never from Beanie's one-per-process class
# binding.
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
# a reason to cut one class in two: a module past it is one class, named here with why it stays
# whole, and still bounded by MAX_ONE_CLASS_LINES.
MAX_MODULE_LINES = 500
ONE_CLASS_MODULES = {
    "app/strategies/inbox_buckets/buckets.py": "the bucket chain algorithm: placement, splits, "
    "merges and removals share one conditional-write protocol on bucket versions",
}
MAX_ONE_CLASS_LINES = 700
# Functions of ~60 lines at most: one screen, so a reader sees a whole function at once.
MAX_FUNCTION_LINES = 60


def test_no_module_is_too_long() -> None:
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in runtime_sources()}
    long = {p: n for p, n in lengths.items() if n > MAX_MODULE_LINES}
    assert {p: n for p, n in long.items() if p not in ONE_CLASS_MODULES} == {}
    assert {p: n for p, n in long.items() if n > MAX_ONE_CLASS_LINES} == {}
    for path in ONE_CLASS_MODULES:
        tree = ast.parse((ROOT / path).read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        assert len(classes) == 1, f"{path} is allowed its length as one class"


def test_no_function_is_too_long() -> None:
    long = []
    for p in runtime_sources():
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert long == []


# -- strategies: composed, not inherited; their collections declared ---------------------------
STRATEGY_SOURCES = sorted((ROOT / "app" / "strategies").rglob("*.py"))


def strategy_classes() -> list[type]:
    import importlib
    import inspect

    classes = []
    for path in STRATEGY_SOURCES:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        mod = importlib.import_module(module)
        classes += [
            c for _, c in inspect.getmembers(mod, inspect.isclass) if c.__module__ == mod.__name__
        ]
    return classes


def test_no_strategy_class_inherits_from_another() -> None:
    """Shared behaviour is composed (a helper or a component passed in), not inherited: no
    class under app/strategies/ derives from another one defined there, exceptions aside."""
    classes = strategy_classes()
    assert len(classes) > 10  # the scan found them
    inherited = [
        f"{c.__qualname__}({base.__qualname__})"
        for c in classes
        for base in c.__mro__[1:]
        if base.__module__.startswith("app.strategies") and not issubclass(c, BaseException)
    ]
    assert inherited == []


def test_registered_strategies_implement_the_contract() -> None:
    """Every registered strategy has every method of the TimelineStrategy protocol (checked by
    mypy too, where each registration's builder returns one)."""
    from app.strategies import contract, specs

    wanted = {
        name
        for name, value in vars(contract.TimelineStrategy).items()
        if callable(value) and not name.startswith("_")
    }
    assert {"read", "apply_posted", "rebuild", "timeline_ids"} <= wanted
    for spec in specs():
        built = spec.build(recording_collaborators(), settings_for(spec.name))
        missing = {m for m in wanted if not callable(getattr(built, m, None))}
        assert missing == set(), f"{spec.name} lacks {missing}"


class _RecordingDb:
    """A database that only records which collections are asked of it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getitem__(self, name: str) -> object:
        self.asked.append(name)
        return object()


def recording_collaborators() -> object:
    from app.strategies import Collaborators

    db = _RecordingDb()
    return Collaborators(
        db=db,  # type: ignore[arg-type]
        statuses=object(),  # type: ignore[arg-type]
        graph=SimpleNamespace(friend_ids=None),  # type: ignore[arg-type]
        activity=None,
        pending=object(),  # type: ignore[arg-type]
        max_items=10,
    )


def settings_for(name: str) -> object:
    from app.settings import Settings

    return Settings(timeline_strategy=name)


def test_no_strategy_reads_a_collection_it_did_not_declare() -> None:
    """A strategy gets the source of truth and the collections its registration declares, and
    nothing else: its builder asks for declared collections only, no strategy module reaches
    for the whole store, and collections are asked for only in the builders."""
    from app.strategies import specs

    for spec in specs():
        collab: object = recording_collaborators()
        spec.build(collab, settings_for(spec.name))  # type: ignore[arg-type]
        asked = set(collab.db.asked)  # type: ignore[attr-defined]
        assert asked <= set(spec.collections), f"{spec.name} asked for {asked}"
    reaching = []
    for path in STRATEGY_SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("store", "db")
                and path.name != "collaborators.py"
            ):
                reaching.append(f"{where} .{node.attr}")
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "app.storage.store"
                and any(alias.name == "Store" for alias in node.names)
            ):
                reaching.append(f"{where} imports Store")
        builders = [
            n
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "build"
        ]
        inside = {id(c) for b in builders for c in ast.walk(b)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "collection"
                and id(node) not in inside
                and path.name not in ("collaborators.py", "__init__.py")
            ):
                reaching.append(f"{path.relative_to(ROOT)}:{node.lineno} .collection()")
    assert reaching == []


# What only the benchmark (httpx, matplotlib, redis) or the CLI's progress bars (rich) need lives
# in extras (pyproject.toml): the service's packages import none of them at module level.
EXTRAS_ONLY = ("httpx", "rich", "matplotlib", "redis")


@pytest.mark.parametrize("package", ["app", "fanout", "entrypoints"])
def test_the_service_needs_only_the_core_install(package: str) -> None:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in EXTRAS_ONLY
            ]
    assert found == []


def test_the_design_map_names_only_what_exists() -> None:
    """docs/design.md opens with a map of the code: every module, package and class it names
    is there (a renamed or removed one fails this until the map follows)."""
    text = (ROOT / "docs" / "design.md").read_text()
    start = text.index("## Map")
    block = text[text.index("```", start) + 3 : text.index("```", text.index("```", start) + 3)]
    sources = [p for d in ("app", "fanout", "entrypoints", "tests") for p in (ROOT / d).rglob("*")]
    files = {p.name for p in sources if p.suffix == ".py"}
    dirs = {p.name for p in sources if p.is_dir()} | {"app", "fanout", "entrypoints"}
    classes = {
        node.name
        for p in sources
        if p.suffix == ".py"
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ClassDef)
    }
    named_files = set(re.findall(r"([a-z_]+\.py)\b", block))
    named_dirs = set(re.findall(r"\b([a-z_]+)/(?=[\s,)])", block))  # a package: "name/ "
    named_classes = set(
        re.findall(r"\b([A-Z][a-z]+(?:[A-Z][a-z]+)+|Store|Graph|Queue|Layout)\b", block)
    )
    assert len(named_files) > 20 and len(named_classes) > 8  # the map was found and read
    assert named_files - files == set()
    assert named_dirs - dirs == set()
    assert named_classes - classes == set()
