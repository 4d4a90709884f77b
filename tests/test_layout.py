"""The layout holds: shipped modules never import the tooling, and import no circle.

The wheel ships two packages, ``ecr_multiarch`` (constructs/) and ``manifest_stitcher``
(lambdas/). The local run (tools/localrun) and the test support (tests/support) are not in
it, so a shipped module that imports them would break for every user who installed the wheel.
The checks read the sources (ast), so they also see imports inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {"ecr_multiarch": ROOT / "constructs" / "ecr_multiarch"}
SHIPPED["manifest_stitcher"] = ROOT / "lambdas" / "manifest_stitcher"
NOT_SHIPPED = ("localrun", "tests")
# Unit tests of the Lambda code and of the constructs run without the local run.
UNIT_TEST_DIRS = (ROOT / "tests" / "lambdas", ROOT / "tests" / "constructs")


def _module_name(package: str, path: Path) -> str:
    relative = path.relative_to(SHIPPED[package]).with_suffix("")
    parts = [package, *relative.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _shipped_modules() -> Iterator[tuple[str, Path]]:
    for package, folder in SHIPPED.items():
        for path in sorted(folder.rglob("*.py")):
            yield _module_name(package, path), path


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against ``module``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def test_the_shipped_packages_are_where_the_wheel_takes_them_from() -> None:
    modules = dict(_shipped_modules())
    assert "manifest_stitcher.handler" in modules
    assert "manifest_stitcher.cli" in modules
    assert "ecr_multiarch.pipeline" in modules
    assert not any(name.startswith("ecr_multiarch.local") for name in modules)


@pytest.mark.parametrize(("module", "path"), list(_shipped_modules()), ids=str)
def test_no_shipped_module_imports_the_tooling(module: str, path: Path) -> None:
    bad = sorted(name for name in _imports(module, path) if name.split(".")[0] in NOT_SHIPPED)
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}, which the wheel does not ship"


def test_no_unit_test_of_the_lambda_code_or_the_constructs_imports_the_local_run() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in _imports("tests", path) if name.split(".")[0] == "localrun"
        )
        for folder in UNIT_TEST_DIRS
        for path in sorted(folder.rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_shipped_modules_import_no_circle() -> None:
    modules = dict(_shipped_modules())
    graph = {
        module: {name for name in _imports(module, path) if name in modules and name != module}
        for module, path in modules.items()
    }
    # A package's __init__ re-exporting its modules is not a circle of the modules themselves.
    graph = {
        module: {dep for dep in deps if not (module.startswith(dep + ".") and dep in SHIPPED)}
        for module, deps in graph.items()
    }

    def cycle_from(start: str) -> list[str] | None:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    return [*trail, start]
                if dep not in trail:
                    stack.append((dep, [*trail, dep]))
        return None

    cycles = [c for c in (cycle_from(m) for m in sorted(graph)) if c]
    assert cycles == [], f"import circles among shipped modules: {cycles[:3]}"


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    # GIVEN two modules that import each other, the import reader sees both edges.
    a = tmp_path / "a.py"
    b = tmp_path / "b.py"
    a.write_text("from . import b\n")
    b.write_text("from .a import thing\n")
    assert "pkg.b" in _imports("pkg.a", a)
    assert "pkg.a" in _imports("pkg.b", b)
