"""The tests' own layout: shared code lives in tests/helpers, test folders never import each other or test modules."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SHARED = {"helpers", "conformance", "postgres_server"}  # importable from anywhere in tests/


def _tests_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `tests.…` import of a file, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, module) for module in modules if module.split(".")[0] == "tests"]
    return found


def test_test_folders_share_code_only_through_tests_helpers():
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        folder = path.relative_to(TESTS).parts[0] if path.parent != TESTS else None
        for line, module in _tests_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else ""
            imports_a_test_module = any(part.startswith("test_") or part == "conftest" for part in parts)
            crosses = target not in SHARED and target != folder
            if imports_a_test_module or crosses or (folder == "helpers" and target != "helpers"):
                wrong.append(f"{path.relative_to(TESTS.parent)}:{line} imports {module}")
    assert not wrong, "shared test code belongs in tests/helpers:\n" + "\n".join(wrong)
