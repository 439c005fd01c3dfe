"""The Prometheus bridge against a real local HTTP server serving captured node_exporter and
dcgm-exporter text (tests/data/), into the real broker."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka_helpers import free_port, read_topic

from fleetmedic.cli import main
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import topic_name
from ingest.prom import Target, scrape
from ingest.promtext import PromParseError, parse

DATA = Path(__file__).parent / "data"


@pytest.fixture
def server():
    pages = {
        "/node": (DATA / "node_exporter.txt").read_bytes(),
        "/dcgm": (DATA / "dcgm_exporter.txt").read_bytes(),
        "/bad": b"node_load1 not-a-number\n",
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow":
                time.sleep(2.0)
            body = pages.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_node_exporter_text_keeps_labels_and_marks_counters(server):
    batch, error = scrape(Target.of(server + "/node", host="gpu-node-07"))
    assert error is None and batch.host == "gpu-node-07" and batch.source == "prom"
    v = batch.values
    assert v["up"] == 1.0 and v["scrape_duration_seconds"] < 5
    assert v['node_cpu_seconds_total{cpu="1",mode="user"}'] == 405771.06
    assert v['node_filesystem_avail_bytes{device="/dev/nvme0n1p2",fstype="ext4",mountpoint="/"}'] == 1.58327734272e11
    assert v["node_load1"] == 31.42 and v["node_vmstat_oom_kill"] == 1
    assert 'node_cpu_seconds_total{cpu="0",mode="idle"}' in batch.counters
    assert 'node_network_receive_errs_total{device="eth0"}' in batch.counters
    assert "go_gc_duration_seconds_count" in batch.counters  # summary counts only grow
    assert "node_load1" not in batch.counters and 'go_gc_duration_seconds{quantile="0.5"}' not in batch.counters
    uname = [k for k in v if k.startswith("node_uname_info")][0]
    assert 'nodename="gpu-node-07"' in uname and 'version="#49~22.04.1-Ubuntu SMP' in uname
    assert len(v) == 3 + sum(
        1 for line in (DATA / "node_exporter.txt").read_text().splitlines() if line and not line.startswith("#")
    )


def test_dcgm_sentinels_are_dropped_and_the_rest_kept(server):
    batch, error = scrape(
        Target.of(server + "/dcgm"),
        drop_labels=frozenset({"DCGM_FI_DRIVER_VERSION", "modelName", "Hostname", "UUID", "pci_bus_id"}),
    )
    assert error is None and batch.host == "127.0.0.1"
    v = batch.values
    assert v['DCGM_FI_DEV_GPU_TEMP{device="nvidia1",gpu="1"}'] == 71
    assert 'DCGM_FI_DEV_MEMORY_TEMP{device="nvidia1",gpu="1"}' not in v  # 9223372036854775794: unsupported
    assert 'DCGM_FI_PROF_GR_ENGINE_ACTIVE{device="nvidia1",gpu="1"}' not in v  # fp64 blank
    assert v['DCGM_FI_DEV_MEMORY_TEMP{device="nvidia0",gpu="0"}'] == 58
    assert v["scrape_samples_dropped"] == 2
    assert 'DCGM_FI_DEV_PCIE_REPLAY_COUNTER{device="nvidia1",gpu="1"}' in batch.counters
    xid = 'DCGM_FI_DEV_XID_ERRORS{device="nvidia1",err_code="94",err_msg="Contained ECC error",gpu="1"}'
    assert v[xid] == 94


def test_down_slow_and_malformed_targets_report_up_zero(server):
    closed = f"http://127.0.0.1:{free_port()}/metrics"
    batch, error = scrape(Target.of(closed))
    assert batch.values["up"] == 0.0 and "URLError" in error and "refused" in error
    # /slow answers after 2 s: the 0.5 s timeout ends the scrape first (the error says so)
    batch, error = scrape(Target.of(server + "/slow"), timeout_s=0.5)
    assert batch.values["up"] == 0.0 and "timed out" in error
    batch, error = scrape(Target.of(server + "/bad"))
    assert batch.values["up"] == 0.0 and "line 1" in error
    assert set(batch.values) == {"up", "scrape_duration_seconds", "scrape_samples_dropped"}
    with pytest.raises(ValueError, match="not an http"):
        Target.of("ftp://x/metrics")


def test_text_parser_handles_escapes_and_names_bad_lines():
    got = parse('# TYPE m counter\nm_total{path="C:\\\\x",msg="say \\"hi\\"\\nbye"} +Inf\n')
    assert got[0].labels == (("msg", 'say "hi"\nbye'), ("path", "C:\\x")) and got[0].is_counter
    with pytest.raises(PromParseError, match="line 2"):
        parse("ok 1\nbroken{a=1} 2\n")


def test_export_prom_command_publishes_a_batch_per_target(server, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    closed = f"http://127.0.0.1:{free_port()}/metrics"
    code = main(
        [
            "export",
            "prom",
            server + "/node",
            server + "/dcgm",
            closed,
            "--count",
            "2",
            "--interval",
            "0.1",
            "--spool-dir",
            str(tmp_path),
            "--health-port",
            "0",
            "--timeout",
            "1",
        ]
    )
    assert code == 0
    got = [r for *_, r in read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)]
    assert len(got) == 6
    by_target = {}
    for r in got:
        by_target.setdefault(r.labels["target"], []).append(r.values["up"])
    assert by_target == {server + "/node": [1.0, 1.0], server + "/dcgm": [1.0, 1.0], closed: [0.0, 0.0]}


def test_canonical_names_match_the_host_and_gpu_exporters(server):
    node, _ = scrape(Target.of(server + "/node"), canonical_names=True)
    dcgm, _ = scrape(Target.of(server + "/dcgm"), canonical_names=True)
    v = node.values
    assert v["load.1"] == 31.42 and v["mem.available_bytes"] == 3.21587453952e11
    assert v["fs./.free_pct"] == round(100 * 1.58327734272e11 / 4.68725362688e11, 3)
    assert v["fs./scratch.readonly"] == 0 and v["disk.nvme1n1.io_time_s"] == 120394.118
    assert v["net.eth0.rx_drops"] == 118 and v["temp.platform_coretemp_0.temp1_c"] == 54
    assert {"vmstat.oom_kill", "net.eth0.rx_errors", "disk.nvme0n1.io_time_s"} <= set(node.counters)
    g = dcgm.values
    assert g["gpu1.temperature_c"] == 71 and g["gpu0.power_w"] == 412.337 and g["gpu1.mem.used_bytes"] == 80104 * 2**20
    assert g["gpu1.remap.uncorrectable"] == 1 and "gpu1.pcie.replay" in dcgm.counters
    assert "gpu1.memory_temp_c" not in g  # the sentinel stays dropped under any name
    plain, _ = scrape(Target.of(server + "/dcgm"))
    assert "gpu1.temperature_c" not in plain.values  # only when asked for
