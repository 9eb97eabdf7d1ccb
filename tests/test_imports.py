"""Imports point down: the core (jewelcut/) never imports worker/, producer/, training/ or
review/, not even inside a function; the worker never imports the producer, training or the
review page. jewelcut.cli is the one place that puts the areas together (it registers their
commands). And no two modules import each other, directly or round a loop (a package's
__init__ aside)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AREAS = ("jewelcut", "worker", "producer", "training", "review")
COMPOSITION_ROOT = ROOT / "jewelcut" / "cli.py"
ABOVE = {
    "jewelcut": {"worker", "producer", "training", "review"},
    "worker": {"producer", "training", "review"},
}


def imported_names(path: Path) -> set[str]:
    """Dotted names a module imports anywhere in its body (`from a.b import c`: a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_names(path)}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_module_imports_a_package_above_it() -> None:
    upward = [
        f"{path.relative_to(ROOT)} imports {sorted(imported_packages(path) & above)}"
        for package, above in ABOVE.items()
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != COMPOSITION_ROOT and imported_packages(path) & above
    ]
    assert upward == []


def test_importing_the_core_loads_no_other_area() -> None:
    modules = sorted(
        "jewelcut." + path.stem
        for path in (ROOT / "jewelcut").glob("*.py")
        if path not in (COMPOSITION_ROOT, ROOT / "jewelcut" / "__main__.py")
        and path.stem != "__init__"
    )
    code = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + "areas = ('worker', 'producer', 'training', 'torch')\n"
        + "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in areas)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "jewelcut.registry" in modules and "jewelcut.modelcard" in modules
    assert result.stdout.strip() == "", f"the core loaded: {result.stdout[:300]}"


def test_no_import_cycles() -> None:
    modules = {
        module_name(path): path
        for area in AREAS
        for path in (ROOT / area).rglob("*.py")
        if path.name != "__init__.py"
    }
    imports = {name: imported_names(path) & set(modules) for name, path in modules.items()}
    cycles = [cycle for name in sorted(modules) if (cycle := _cycle_from(name, imports))]
    assert cycles == []


def _cycle_from(start: str, imports: dict[str, set[str]]) -> list[str] | None:
    """A loop of imports that leads from `start` back to it, or None."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop()
        for name in sorted(imports[path[-1]]):
            if name == start:
                return [*path, start]
            if name not in seen:
                seen.add(name)
                paths.append([*path, name])
    return None
