"""The packages' direction (docs/architecture.md): each imports only from the layers below it, so
nothing imports back up. Read from the source with ast (imports inside functions count too)."""

from __future__ import annotations

import ast

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mcmdpo"
# Lower layers first; a package may import its own layer's modules only where named in SIDEWAYS.
LAYERS = [
    {"files", "caching", "compat"},
    {"data"},
    {"model"},
    {"preference"},
    {"train", "eval"},
    {"app", "build"},
    {"tiny"},  # test, demo and benchmark fixtures: may use anything below, and nothing below uses it
    {"demo", "demo_report"},
]
LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}
SIDEWAYS = {
    ("demo", "demo_report"),  # the demo writes its report
    ("app", "build"),  # the annotation page writes the database the builder's human ranker reads (mcmdpo/build/annotations.py)
}


def top_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mcmdpo" and len(parts) > 1 else None


def imports_of(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "mcmdpo")
    return found


def test_every_package_is_in_a_layer():
    packages = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
                if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()}
    assert packages <= set(LAYER), f"add to LAYERS: {sorted(packages - set(LAYER))}"


def test_nothing_imports_back_up():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module in imports_of(path):
            other = top_package(module)
            if other is None or other == own or other == "__init__":
                continue
            upward = LAYER[other] > LAYER[own]
            sideways = LAYER[other] == LAYER[own] and (own, other) not in SIDEWAYS
            if upward or sideways:
                wrong.append(f"mcmdpo/{relative} imports {module}")
    assert not wrong, "imports against the layers of docs/architecture.md:\n" + "\n".join(wrong)
