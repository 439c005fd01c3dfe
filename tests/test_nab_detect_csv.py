"""`fleetmedic detect csv` end to end: the alarms are the live engine's incident openings."""

import csv
from datetime import UTC, datetime

import numpy as np
from test_nab_eval import FILES, corpus, pytestmark  # noqa: F401  (the two-file NAB fixture)

from detectors import nab
from detectors.config import DetectorConfig
from detectors.engine import Engine
from detectors.univariate import SurpriseRecordParams
from fleetmedic.cli import main
from fleetmedic.schemas import MetricBatch
from fleetmedic.transport import Received


def test_detect_csv_alarms_are_the_live_engines_incident_openings(corpus, tmp_path):  # noqa: F811 (the fixture)
    data, _ = corpus
    source = data / FILES[1]
    out = tmp_path / "out.csv"
    assert main(["detect", "csv", str(source), "-o", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "value", "anomaly_score", "alarm"]
    series = nab.read_series(source)
    assert len(rows) - 1 == len(series.values) == 4032
    assert [r[0] for r in rows[1:]] == series.stamps
    assert [r[1] for r in rows[1:]] == [line.split(",")[1] for line in source.read_text().splitlines()[1:]]
    scores = np.array([float(r[2]) for r in rows[1:]])
    alarm_rows = [i for i, r in enumerate(rows[1:]) if r[3] == "1"]
    assert 0.0 <= scores.min() and scores.max() < 1.0
    assert alarm_rows and all(scores[i] >= SurpriseRecordParams().threshold for i in alarm_rows)

    # The same values as metric records through the live engine, with the same rule: an
    # incident opens exactly at the alarm rows.
    config = DetectorConfig(univariate=[{"name": "nab", "match": ["*"], "for_s": 0, "resolve_after_s": 0}])
    records = [
        MetricBatch(host="nab-host", time=datetime.fromtimestamp(int(t), UTC), source="nab", values={"cpu": float(v)})
        for t, v in zip(series.epoch_s, series.values, strict=True)
    ]
    incidents = Engine(config).process([Received(r, "t.metrics.v1", 0, i, 0, r.key()) for i, r in enumerate(records)])
    opened = sorted(int(i.time.timestamp()) for i in incidents if i.status == "open")
    assert opened == [int(series.epoch_s[i]) for i in alarm_rows]


def test_detect_csv_rejects_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,val\n1,2\n")
    assert main(["detect", "csv", str(bad)]) == 2
    assert "bad.csv:1" in capsys.readouterr().err
