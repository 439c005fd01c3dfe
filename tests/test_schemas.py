"""The committed JSON Schemas follow the models; contracts reject what they must."""

import json
from pathlib import Path

import pytest
from examples import T0, examples
from pydantic import ValidationError

from fleetmedic.cli import main
from fleetmedic.schemas import CONTRACTS, MetricBatch

COMMITTED = Path(__file__).resolve().parent.parent / "schemas"


def test_exported_schemas_match_the_committed_ones(tmp_path):
    assert main(["schemas", "export", str(tmp_path)]) == 0
    exported = sorted(p.name for p in tmp_path.iterdir())
    assert exported == sorted(p.name for p in COMMITTED.glob("*.json")), "run `make schemas` and commit"
    for name in exported:
        assert json.loads((tmp_path / name).read_text()) == json.loads((COMMITTED / name).read_text()), (
            f"schemas/{name} drifted from the model: run `make schemas` and commit"
        )


def test_every_contract_is_exported_and_versioned():
    assert {m.__name__ for m in CONTRACTS.values()} == {type(e).__name__ for e in examples()}
    for model in CONTRACTS.values():
        assert model.model_json_schema()["properties"]["schema_version"]["const"] == 1


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"time": "2026-11-25T04:00:00"}, "timezone"),  # naive times are ambiguous
        ({"host": "node; rm -rf /"}, "String should match pattern"),
        ({"values": {"x": float("nan")}}, "finite number"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_metric_batch_rejects(change, reason):
    good = dict(host="n1", time=T0, source="sim", values={"x": 1.0})
    with pytest.raises(ValidationError, match=reason):
        MetricBatch(**{**good, **change})


def test_times_are_normalised_to_utc():
    a = MetricBatch(host="n1", time="2026-11-25T06:00:00+02:00", source="s", values={})
    b = MetricBatch(host="n1", time="2026-11-25T04:00:00Z", source="s", values={})
    assert a.to_bytes() == b.to_bytes()
