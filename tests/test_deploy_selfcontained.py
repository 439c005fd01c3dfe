"""The repo stands on its own: README, docs, code and deploy files point only inside it.

The one allowed way out is the benchmark data (../shared/data/, the NAB development subset),
which the benchmarks and the NAB tests read where it exists and skip without.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED_OUTSIDE = re.compile(r"(\.\./shared|/work/shared)/data(/|\b)")
OUTSIDE = re.compile(r"(\.\./shared|/work/shared)[^\s`'\")]*")


def _tracked() -> list[Path]:
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [
        ROOT / p
        for p in done.stdout.splitlines()
        if p.endswith((".py", ".md", ".yaml", ".yml", ".toml", ".service", ".sh", ".in", ".lock", ".txt"))
        or p in ("Makefile", ".ci/run")
    ]


def test_nothing_refers_to_a_design_document_outside_the_repo():
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in _tracked()
        if p.name != Path(__file__).name
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if "DESIGN.md" in line
    ]
    assert not hits, "refers to DESIGN.md (use docs/architecture.md): " + ", ".join(hits)


def test_paths_outside_the_repo_are_only_the_benchmark_data():
    hits = []
    for p in _tracked():
        if p.name == Path(__file__).name:
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for m in OUTSIDE.finditer(line):
                if not ALLOWED_OUTSIDE.match(m.group(0)):
                    hits.append(f"{p.relative_to(ROOT)}:{n}: {m.group(0)}")
    assert not hits, "\n".join(hits)


def test_the_architecture_document_is_in_the_repo_and_names_what_the_code_has():
    text = (ROOT / "docs" / "architecture.md").read_text()
    from fleetmedic.config import Settings
    from fleetmedic.topics import topic_specs

    for spec in topic_specs(Settings()):
        assert f"`{spec.name}`" in text, spec.name
    for module in ("ingest/", "detectors/", "remediator/", "review/", "playbooks/", "deploy/"):
        assert module in text
