"""The design card's layering: the core never imports the CLI toolkit, and only the store touches a database."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dpsctl"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_store_and_server_never_import_typer_or_rich():
    for folder in ("core", "store", "server"):
        for path in (PACKAGE / folder).rglob("*.py"):
            assert not imported_modules(path) & {"typer", "rich", "click"}, f"{path} imports the CLI toolkit"


def test_only_the_store_touches_a_database():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "store":
            continue
        assert not imported_modules(path) & {"tinydb", "sqlite3"}, f"{path} imports a database library"


def test_the_layering_test_can_see_imports():
    assert {"tinydb"} <= imported_modules(PACKAGE / "store" / "tinydb_store.py")
    assert {"typer"} <= imported_modules(PACKAGE / "cli" / "app.py")


# The engine's modules in the order a registration goes through them; each imports only those before it.
ENGINE_ORDER = ("request", "plan", "allocate", "outcome", "record", "history", "settle")


def engine_imports(path: Path) -> set[str]:
    """The dpsctl.core.engine modules (and dpsctl.core.provisioning) a module imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {n.rsplit(".", 1)[-1] for n in names if n.startswith("dpsctl.core.engine.") or n == "dpsctl.core.provisioning"}


def test_the_engine_goes_one_way_each_phase_importing_only_the_phases_before_it():
    modules = {path.stem for path in (PACKAGE / "core" / "engine").glob("*.py")} - {"__init__"}
    assert modules == set(ENGINE_ORDER)
    for position, name in enumerate(ENGINE_ORDER):
        imported = engine_imports(PACKAGE / "core" / "engine" / f"{name}.py")
        assert imported <= set(ENGINE_ORDER[:position]), f"core/engine/{name}.py imports {imported}"
