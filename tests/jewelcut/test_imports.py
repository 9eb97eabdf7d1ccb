"""Imports point down: the core (jewelcut/) never imports worker/, producer/ or training/, not
even inside a function; the worker never imports the producer or training. jewelcut.cli is the
one place that puts the areas together (it registers their commands)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = ROOT / "jewelcut" / "cli.py"
ABOVE = {
    "jewelcut": {"worker", "producer", "training"},
    "worker": {"producer", "training"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports anywhere in its body."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages


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
