"""The house rules that a tool can check: module size and the layering of docs/architecture.md
(`ingest/`, `detectors/` and `remediator/` import only the core; `review/` sits on top and may
import the stages; nothing imports `fleetmedic_demo/`).

Both read the source tree only (no imports), so they run in milliseconds and in every job.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("fleetmedic", "ingest", "detectors", "remediator", "review", "fleetmedic_demo")
STAGES = ("ingest", "detectors", "remediator")  # review/ sits above them
MAX_LINES = 500  # issue 17: one job per module, small enough to hold in your head


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PRODUCT)
def test_no_product_module_is_over_500_lines(package):
    modules = _modules(package)
    assert modules, f"no modules found under {package}/"
    too_long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert too_long == {}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", ("fleetmedic", *STAGES, "review"))
def test_the_core_imports_no_stage_and_stages_import_no_other_stage_nor_the_demo(package):
    # fleetmedic/cli.py composes the stages' commands: the one module of the core that imports them
    allowed = {"fleetmedic/cli.py"}
    forbidden = {"fleetmedic_demo"} | ({*STAGES, "review"} - {package} if package != "review" else set())
    bad = {}
    for path in _modules(package):
        rel = str(path.relative_to(ROOT))
        if rel not in allowed and (hits := _imported_packages(path) & forbidden):
            bad[rel] = sorted(hits)
    assert bad == {}
