"""`detect csv` and `eval nab` read a file whose clock steps back like the live engine reads late data (issue 13)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

import numpy as np

from detectors import nab
from detectors.config import DetectorConfig
from detectors.engine import Engine
from fleetmedic.cli import main
from fleetmedic.schemas import MetricBatch
from fleetmedic.transport import Received


def _file(tmp_path):
    """Five-minute rows with a clock change: at row 100 the clock goes back an hour, for 12 rows."""
    rng = np.random.default_rng(3)
    t = np.datetime64("2014-04-01T00:00:00", "s") + np.arange(300) * np.timedelta64(300, "s")
    t[100:112] -= np.timedelta64(3600, "s")
    v = 10 + rng.normal(0, 1, 300)
    v[200] = 60
    path = tmp_path / "clock.csv"
    path.write_text(
        "timestamp,value\n" + "".join(f"{str(a).replace('T', ' ')},{b:.3f}\n" for a, b in zip(t, v, strict=True))
    )
    return path, t, v


def test_rows_stepping_back_are_late_data_counted_and_not_used(tmp_path, capsys):
    path, t, v = _file(tmp_path)
    series = nab.read_series(path)  # before the fix: ValueError "timestamps must not go backwards"
    assert series.late_rows == 12
    assert np.isnan(series.values[100:112]).all() and not np.isnan(series.values[112:]).any()
    out = tmp_path / "out.csv"
    assert main(["detect", "csv", str(path), "-o", str(out)]) == 0
    assert "12 late rows" in capsys.readouterr().err
    rows = list(csv.reader(open(out)))[1:]
    assert len(rows) == 300 and all(r[3] == "0" and float(r[2]) == 0.0 for r in rows[100:112])
    assert [r[1] for r in rows[100:112]] == [f"{x:.3f}" for x in v[100:112]]  # written as read
    # the live engine, fed the same rows in the same order, drops the same rows and alarms at the same ones
    config = DetectorConfig(univariate=[{"name": "nab", "match": ["*"], "for_s": 0, "resolve_after_s": 0}])
    engine = Engine(config)
    records = [
        MetricBatch(
            host="h", time=datetime.fromtimestamp(int(a.astype(np.int64)), UTC), source="nab", values={"cpu": float(b)}
        )
        for a, b in zip(t, v, strict=True)
    ]
    incidents = engine.process([Received(r, "t.metrics.v1", 0, i, 0, r.key()) for i, r in enumerate(records)])
    assert engine.stats.dropped_late + engine.stats.stale_values == 12
    opened = sorted(int(i.time.timestamp()) for i in incidents if i.status == "open")
    assert opened == [int(series.epoch_s[i]) for i, r in enumerate(rows) if r[3] == "1"]


def test_window_rows_place_a_late_row_under_the_newest_time_before_it():
    t = np.array(["2014-04-01T00:00", "2014-04-01T00:10", "2014-04-01T00:05", "2014-04-01T00:15"], "datetime64[s]")
    assert nab.window_rows(t, [["2014-04-01 00:09:00", "2014-04-01 00:11:00"]]) == [(1, 2)]
