"""`fleetmedic eval nab` end to end on two files of the NAB dev subset."""

import json
import shutil
from pathlib import Path

import numpy as np
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
    # the sweep's scoring at the rule's own threshold (0.529): what splits a gap between the two above
    assert lines["configured"][4] == "0.5290," and lines["configured"][1:4] == ["90.7", "88.8", "93.8"]
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["artificialWithAnomaly__art_daily_jumpsup.png", "realAWSCloudwatch__rds_cpu_utilization_e47b3b.png"]
    assert "art_daily_jumpsup" in (plots / "index.html").read_text()


def test_eval_nab_bad_input_is_a_clear_error(corpus, tmp_path, capsys):
    data, labels = corpus
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"nowhere/x.csv": []}))
    assert main(["eval", "nab", "--data", str(data), "--labels", str(missing)]) == 2
    assert "nowhere/x.csv" in capsys.readouterr().err


def test_eval_nab_prints_leave_one_category_out_and_artificial_vs_real(corpus, capsys):
    data, labels = corpus
    assert main(["eval", "nab", "--data", str(data), "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split() for line in out.split("leave-one-category-out")[1].splitlines() if line.strip()
    }
    # one category each: the threshold of one is chosen on the other, and the held-out score is
    # that category's score at that threshold (recomputed here with the scorer)
    held = {cat: float(rows[cat][4]) for cat in ("artificialWithAnomaly", "realAWSCloudwatch")}
    assert rows["artificialWithAnomaly"][1:3] == ["1", "1"] and rows["realAWSCloudwatch"][1:3] == ["1", "2"]
    mean = next(line for line in out.splitlines() if line.startswith("LOCO mean"))
    assert mean.startswith(f"LOCO mean {sum(held.values()) / 2:.1f}, worst {min(held.values()):.1f}")
    assert any(line.split()[:3] == ["artificial", "1", "1"] for line in out.splitlines())
    assert any(line.split()[:3] == ["real", "1", "2"] for line in out.splitlines())


def test_fleet_benchmark_is_seeded_and_labelled_like_nab(tmp_path):
    from detectors import fleet_series

    a, b = fleet_series.make(0), fleet_series.make(0)
    assert list(a) == list(b) and all(np.array_equal(a[k][1], b[k][1]) for k in a)
    assert not np.array_equal(
        fleet_series.make(1)["gpu_power/gpu_power_05_spike.csv"][1], a["gpu_power/gpu_power_05_spike.csv"][1]
    )
    cats = {name.split("/")[0] for name in a}
    assert cats == {"gpu_temperature", "gpu_power", "gpu_util", "ecc_corrected", "net_drops"}
    for (_name, (times, values, windows)), (_, kinds) in zip(a.items(), fleet_series.LAYOUT, strict=True):
        n = len(values)
        # one window per labelled anomaly (a counter reset is a nuisance, not an anomaly), NAB's
        # width rule (10 % of the rows over the number of anomalies), after the probation
        assert len(windows) == sum(k != "counter_reset_ok" for k in kinds)
        for lo, hi in windows:
            assert lo > nab.probation_rows(n) and hi - lo + 1 <= int(0.1 * n) + 1
        assert all(t2 > t1 for t1, t2 in zip(times, times[1:], strict=False))  # gaps and clock steps go forward
    data, labels = fleet_series.write(tmp_path, 0)
    windows = json.loads(labels.read_text())
    series = nab.read_series(data / "gpu_temperature/gpu_temperature_03_spike_level_shift.csv")
    assert (
        nab.window_rows(series.times, windows["gpu_temperature/gpu_temperature_03_spike_level_shift.csv"])
        == a["gpu_temperature/gpu_temperature_03_spike_level_shift.csv"][2]
    )
