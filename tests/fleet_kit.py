"""Shared pieces of the fleet tests: a 3-host SSH testbed (deploy/testbed/fleet.sh) and its playbooks."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from remediator_kit import TEST_PLAYBOOKS

from fleetmedic_demo.testbed import FleetTestbed, fleet_missing_reason
from remediator.inventory import Inventory

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


def fleet_or_skip() -> None:
    why = fleet_missing_reason()
    if why:
        pytest.skip(f"fleet testbed: {why}")


def start_fleet(directory: Path) -> FleetTestbed:
    """Three hosts with a name unique to this run (namespace names are machine-wide)."""
    fleet_or_skip()
    prefix = f"fmt{uuid.uuid4().hex[:5]}h"
    return FleetTestbed(directory, prefix, count=3).start()


def fleet_playbooks(directory: Path) -> Path:
    """The real playbooks plus the host-side test marker, in one allowed directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for book in PLAYBOOKS.glob("*.yml"):
        shutil.copy(book, directory / book.name)
    shutil.copy(TEST_PLAYBOOKS / "host_marker.yml", directory / "host_marker.yml")
    return directory


def fleet_inventory(fleet: FleetTestbed) -> Inventory:
    return Inventory(fleet.inventory, refresh_s=3600)


__all__ = ["fleet_or_skip", "start_fleet", "fleet_playbooks", "fleet_inventory", "os"]
