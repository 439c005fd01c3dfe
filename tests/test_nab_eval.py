"""`fleetmedic eval nab` end to end on two files of the NAB dev subset."""

import json
import shutil
from pathlib import Path

import pytest

from detectors import nab
from fleetmedic.cli import main

NAB_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab-dev"
if not NAB_DEV.is_dir():
    NAB_DEV = Path("/work/shared/data/nab-dev")
FILES = ["artificialWithAnomaly/art_daily_jumpsup.csv", "realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv"]

pytestmark = pytest.mark.skipif(not NAB_DEV.is_dir(), reason="the NAB dev subset is not on this machine")


@pytest.fixture
def corpus(tmp_path):
    windows = json.loads((NAB_DEV / "labels" / "combined_windows.json").read_text())
    for name in FILES:
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB_DEV / "data" / name, tmp_path / "data" / name)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({name: windows[name] for name in FILES}))
    return tmp_path / "data", labels


def test_eval_nab_prints_per_file_and_overall_scores_and_plots(corpus, tmp_path, capsys):
    data, labels = corpus
    plots = tmp_path / "plots"
    assert main(["eval", "nab", "--data", str(data), "--labels", str(labels), "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # jumpsup: one window, rows 2787..3189 (W = 403); the detector first fires on row 2988, so
    # y = -(3189 - 2988 + 1) / 403 = -0.50124 and it earns sigma(y) / sigma(-1) = 0.861, no false
    # alarm; the same under every profile.
    jumpsup = lines[FILES[0]]
    assert jumpsup[1:5] == ["1", "0.861", "0.861", "0.861"] and jumpsup[5:] == ["1", "0", "0"]
    assert float(nab.scaled_sigmoid(-(3189 - 2988 + 1) / 403) / nab.SIGMA_LEFT_EDGE) == pytest.approx(0.861, abs=5e-4)
    # rds: both windows found (2 true positives) and one false alarm before the first window.
    assert lines[FILES[1]][5:] == ["2", "0", "1"]
    # Overall over 3 windows: raw = 0.861 + 1.583 = 2.444 -> 100 (2.444 + 3) / 6 = 90.7.
    assert lines[FILES[1]][2] == "1.583"
    assert lines["best"][2:5] == ["90.7", "88.9", "93.8"]
    assert lines["engine"][2:5] == ["90.7", "88.8", "93.8"]
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["artificialWithAnomaly__art_daily_jumpsup.png", "realAWSCloudwatch__rds_cpu_utilization_e47b3b.png"]
    assert "art_daily_jumpsup" in (plots / "index.html").read_text()


def test_eval_nab_bad_input_is_a_clear_error(corpus, tmp_path, capsys):
    data, labels = corpus
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"nowhere/x.csv": []}))
    assert main(["eval", "nab", "--data", str(data), "--labels", str(missing)]) == 2
    assert "nowhere/x.csv" in capsys.readouterr().err
