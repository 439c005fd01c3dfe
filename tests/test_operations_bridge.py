"""Issue 14 item 4: the Prometheus bridge's file service discovery (reloaded on change), concurrent
scrapes with per-target interval and timeout, and TLS with a bearer token; against local HTTP(S)
servers serving captured node_exporter text, into the real broker. The 2,000-target measurement
is bench/bridge_bench.py (a benchmark, not a test)."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kafka_helpers import read_topic

from fleetmedic.cli import main
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until
from ingest.promsd import FileSD, ScrapeAuth, ScrapePool, SDError, load_target_file

NODE = (Path(__file__).parent / "data" / "node_exporter.txt").read_bytes()
TOKEN = "s3cret-token"


class Targets:
    """Many simulated targets on one server: /t/NAME/metrics; /slow/... answers after 2 s."""

    def __init__(self, tls: tuple[Path, Path] | None = None, token: str | None = None):
        self.hits: dict[str, int] = {}
        self.auth_seen: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                outer.auth_seen.append(self.headers.get("Authorization"))
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_error(401)
                    return
                if self.path.startswith("/slow/"):
                    time.sleep(2.0)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(NODE)))
                self.end_headers()
                self.wfile.write(NODE)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def targets():
    t = Targets()
    yield t
    t.close()


def _group(address, path, **labels):
    return {"targets": [address], "labels": {"__metrics_path__": path, **labels}}


def test_target_files_in_json_and_yaml_with_labels_and_their_errors(tmp_path):
    (tmp_path / "a.json").write_text(
        json.dumps(
            [
                _group(
                    "10.1.0.7:9100",
                    "/metrics",
                    host="gpu-7",
                    rack="r1",
                    __scrape_interval__="30s",
                    __scrape_timeout__="2s",
                )
            ]
        )
    )
    (tmp_path / "b.yml").write_text(
        yaml.safe_dump([{"targets": ["gpu-8:9400", "gpu-9:9400"], "labels": {"__scheme__": "https"}}])
    )
    a = load_target_file(str(tmp_path / "a.json"))
    assert [(t.url, t.host, dict(t.labels), t.interval_s, t.timeout_s) for t in a] == [
        ("http://10.1.0.7:9100/metrics", "gpu-7", {"host": "gpu-7", "rack": "r1"}, 30.0, 2.0)
    ]
    b = load_target_file(str(tmp_path / "b.yml"), default_interval_s=15, default_timeout_s=5)
    assert [(t.url, t.host, t.interval_s, t.timeout_s) for t in b] == [
        ("https://gpu-8:9400/metrics", "gpu-8", 15, 5),
        ("https://gpu-9:9400/metrics", "gpu-9", 15, 5),
    ]
    for bad, why in [
        ("[{]", "not valid JSON"),
        ('{"targets": []}', "list of target groups"),
        ('[{"targets": ["x:1"], "labels": {"__scheme__": "ftp"}}]', "not http or https"),
        ('[{"targets": ["x:1"], "labels": {"__scrape_interval__": "soon"}}]', "not a duration"),
        ('[{"targets": ["x y:1"]}]', "is not host:port"),
    ]:
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(SDError, match=why):
            load_target_file(str(tmp_path / "bad.json"))


def test_reload_on_change_per_target_interval_and_timeout(targets, tmp_path):
    sd_file = tmp_path / "targets.json"
    sd_file.write_text(
        json.dumps(
            [
                _group(targets.address, "/t/fast/metrics", host="fast", __scrape_interval__="300ms"),
                _group(targets.address, "/t/slowpoll/metrics", host="slowpoll", __scrape_interval__="3s"),
                _group(
                    targets.address, "/slow/metrics", host="hung", __scrape_interval__="1s", __scrape_timeout__="300ms"
                ),
            ]
        )
    )
    sd = FileSD([str(tmp_path / "*.json")], refresh_s=0)
    pool = ScrapePool(workers=8)
    got: dict[str, list] = {}

    def step() -> None:
        if sd.refresh():
            pool.set_targets(sd.targets())
        for t, batch, error in pool.poll():
            got.setdefault(t.host, []).append((batch, error))

    try:
        wait_until(
            lambda: step() or len(got.get("slowpoll", [])) >= 2 and got.get("hung"),
            30,
            0.05,
            what="two scrapes of the 3 s target and one of the hung one",
        )
        # each target on its own interval: the 300 ms one is scraped several times as often
        assert len(got["fast"]) >= 3 * len(got["slowpoll"]) - 3 and len(got["fast"]) > len(got["slowpoll"])
        fast, error = got["fast"][0]
        assert error is None and fast.values["up"] == 1.0 and fast.labels["host"] == "fast"
        hung, error = got["hung"][0]
        assert hung.values["up"] == 0.0 and "timed out" in error and hung.values["scrape_duration_seconds"] < 1.5

        # the file changes: one target goes, one comes (YAML this time, next to the JSON)
        sd_file.write_text(json.dumps([_group(targets.address, "/t/fast/metrics", host="fast")]))
        (tmp_path / "more.json").write_text(
            json.dumps([_group(targets.address, "/t/new/metrics", host="newcomer", __scrape_interval__="200ms")])
        )
        wait_until(lambda: step() or "newcomer" in got, 30, 0.05, what="the new target to be scraped")
        assert sorted(t.host for t in sd.targets()) == ["fast", "newcomer"]
        before = targets.hits.get("/t/slowpoll/metrics", 0)
        seen_new = len(got["newcomer"])
        wait_until(lambda: step() or len(got["newcomer"]) >= seen_new + 3, 30, 0.05, what="more scrapes")
        assert targets.hits.get("/t/slowpoll/metrics", 0) <= before + 1  # at most one already in flight

        # a broken edit keeps the file's previous targets and says why
        (tmp_path / "more.json").write_text("[{not json")
        step()
        assert "not valid JSON" in sd.errors[str(tmp_path / "more.json")]
        assert sorted(t.host for t in sd.targets()) == ["fast", "newcomer"]
    finally:
        pool.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_export_prom_over_tls_with_a_bearer_token_from_target_files(settings, tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    server = Targets(tls=(cert, key), token=TOKEN)
    try:
        monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
        monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
        (tmp_path / "token").write_text(TOKEN + "\n")
        (tmp_path / "sd.yaml").write_text(
            yaml.safe_dump(
                [
                    {
                        "targets": [server.address],
                        "labels": {
                            "__scheme__": "https",
                            "__metrics_path__": f"/t/{i}/metrics",
                            "host": f"gpu-node-{i}",
                            "class": "h100x8",
                        },
                    }
                    for i in range(3)
                ]
            )
        )
        code = main(
            [
                "export",
                "prom",
                "--sd-file",
                str(tmp_path / "*.yaml"),
                "--ca-file",
                str(cert),
                "--bearer-token-file",
                str(tmp_path / "token"),
                "--count",
                "2",
                "--interval",
                "2",
                "--spool-dir",
                str(tmp_path / "spool"),
                "--health-port",
                "0",
            ]
        )
        assert code == 0
        got = [r for *_, r in read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)]
        assert sorted({r.host for r in got}) == ["gpu-node-0", "gpu-node-1", "gpu-node-2"] and len(got) == 6
        assert all(r.values["up"] == 1.0 and r.labels["class"] == "h100x8" for r in got)
        assert all(r.values["node_load1"] == 31.42 for r in got)
        assert set(server.auth_seen) == {f"Bearer {TOKEN}"}

        # without the token the server refuses: the targets are down (up 0), nothing crashes
        (tmp_path / "token").write_text("wrong\n")
        monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix + "x.")
        assert (
            main(
                [
                    "export",
                    "prom",
                    "--sd-file",
                    str(tmp_path / "sd.yaml"),
                    "--ca-file",
                    str(cert),
                    "--bearer-token-file",
                    str(tmp_path / "token"),
                    "--count",
                    "1",
                    "--interval",
                    "0.2",
                    "--spool-dir",
                    str(tmp_path / "spool2"),
                    "--health-port",
                    "0",
                    "--create-topics",
                ]
            )
            == 0
        )
        refused = [
            r
            for *_, r in read_topic(
                settings,
                topic_name(settings, "metrics.v1").replace(settings.topic_prefix, settings.topic_prefix + "x."),
                MetricBatch,
            )
        ]
        assert len(refused) == 3 and all(r.values["up"] == 0.0 for r in refused)
        # an unknown CA fails the TLS handshake: down as well
        assert (
            main(
                [
                    "export",
                    "prom",
                    "--sd-file",
                    str(tmp_path / "sd.yaml"),
                    "--count",
                    "1",
                    "--interval",
                    "0.2",
                    "--spool-dir",
                    str(tmp_path / "spool3"),
                    "--health-port",
                    "0",
                ]
            )
            == 0
        )
    finally:
        server.close()


def test_scrape_auth_rereads_the_token_and_rejects_a_bad_ca(tmp_path):
    (tmp_path / "t").write_text("one\n")
    auth = ScrapeAuth(bearer_token_file=str(tmp_path / "t"))
    assert auth.headers() == {"Authorization": "Bearer one"}
    (tmp_path / "t").write_text("two")
    assert auth.headers() == {"Authorization": "Bearer two"}
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        ScrapeAuth(ca_file=str(tmp_path / "ca.pem")).ssl_context()
