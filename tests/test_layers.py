"""docs/DESIGN.md's layer order, enforced on the import graph: no module imports a module of a higher layer
(imports inside functions count: they are dependencies too)."""

from __future__ import annotations

import ast
import re

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "phasescope"


def design_layers() -> dict[str, int]:
    """Layer of each top-level module or package of phasescope, from DESIGN.md's table (one row a layer,
    in order, from the run store up to the entry points) and its utilities (layer 0, every layer may use)."""
    design = (REPO_ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    section = design[design.index("## Layers"):design.index("## Contracts")]
    layers: dict[str, int] = {}
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for rank, row in enumerate(rows, start=1):
        for name in re.findall(r"`([a-z_]+)(?:/|\.py)`", row.split("|")[1]):
            layers[name] = rank
    utilities = section[section.index(rows[-1]) + len(rows[-1]):section.index("small utilities")]
    for name in re.findall(r"`([a-z_]+)\.py`", utilities):
        layers[name] = 0
    layers["__init__"] = len(rows) + 1  # the package's own namespace re-exports from every layer
    return layers


def imports_of(path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name == "phasescope" or name.startswith("phasescope.")]


def top_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_design_names_every_top_level_module_and_package():
    layers = design_layers()
    present = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
               if (path.suffix == ".py" or (path / "__init__.py").is_file())}
    assert present - set(layers) == set(), "modules DESIGN.md's layers do not name"
    assert {"run", "models", "data", "train", "measures", "report", "integrations", "cli"} <= set(layers)


def test_no_module_imports_a_higher_layer():
    layers = design_layers()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 or path.name != "__init__.py" \
            else "__init__"
        for module, line in imports_of(path):
            target = top_level(module)
            if target != own and layers[target] > layers[own]:
                upward.append(f"{relative}:{line} ({own}) imports {module} ({target})")
    assert upward == []
