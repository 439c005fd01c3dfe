"""What a doctor check reports: one `Finding` per check and problem, with its level and fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str = ""

    def lines(self) -> list[str]:
        label = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}[self.level]
        out = [f"{label:5s} {self.check:10s} {self.message}"]
        if self.fix:
            out.append(f"{'':5s} {'':10s} fix: {self.fix}")
        return out
