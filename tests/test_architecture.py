"""The package's shape: no import cycles (imports inside functions included), no private
names imported across modules, the command line importable without numpy or Spark, and
test machinery kept out of the product."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fruits_pipeline"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """Return (imported module, imported name or "", line) for every import of the package
    in ``path``, at any depth (inside functions too)."""
    found = []
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:  # ``from package import module``
                    found.append((submodule, "", node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return [(name, item, line) for name, item, line in found if name in modules]


def test_no_import_cycles():
    modules = package_modules()
    graph = {
        name: {target for target, _, _ in imports_of(path, modules) if target != name}
        for name, path in modules.items()
    }
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_private_names_imported_across_modules():
    modules = package_modules()
    private = [
        f"{path.relative_to(ROOT)}:{line} imports {item} from {target}"
        for path in modules.values()
        for target, item, line in imports_of(path, modules)
        if item.startswith("_") and item != "__version__"
    ]
    assert private == []


def test_the_command_line_imports_without_numpy_or_spark():
    probe = (
        "import sys; import fruits_pipeline.cli, fruits_pipeline.results.layout; "
        "heavy = sorted(m for m in ('numpy', 'pyspark', 'pandas', 'tensorflow') "
        "if m in sys.modules); print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("word", ["TEST_CRASH", "_for_tests", "pytest"])
def test_no_test_machinery_in_the_product(word):
    hits = [
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if word in path.read_text(encoding="utf-8")
    ]
    assert hits == []


def table_entries(markdown: Path) -> set[str]:
    """The module paths named in the first column of a markdown file's tables."""
    entries = set()
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            entries |= {part for part in first_cell.split("`")[1::2]}
    return entries


def test_the_architecture_docs_name_every_module():
    named = table_entries(ROOT / "docs" / "architecture.md")
    folders = {entry[: -len("/…")] for entry in named if entry.endswith("/…")}
    modules = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or path.parent.name == "engines"
    }
    covered = {m for m in modules if m.split("/")[0] in folders}
    assert sorted(modules - named - covered) == [], "modules missing from docs/architecture.md"
    stale = {entry for entry in named if entry.endswith(".py")} - modules
    assert stale == set(), "docs/architecture.md names modules that do not exist"


def test_the_readme_names_every_top_level_part():
    named = table_entries(ROOT / "README.md")
    parts = {
        path.name + ("/" if path.is_dir() else "")
        for path in PACKAGE.iterdir()
        if path.name != "__init__.py" and path.name != "__pycache__"
    }
    assert sorted(parts - named) == [] and sorted(named - parts) == []
