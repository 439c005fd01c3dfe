"""The Prometheus bridge: scrape text endpoints (node_exporter, dcgm-exporter, any /metrics) into
metric batches, one per target per scrape.

Series keep the exposition's metric name and labels (``node_cpu_seconds_total{cpu="0",mode="idle"}``);
counters are listed in `counters`; non-finite values and dcgm's sentinels for unsupported fields
are dropped (counted in ``scrape_samples_dropped``). Each batch also carries ``up`` (1 scraped,
0 failed: the batch then holds only the scrape metrics) and ``scrape_duration_seconds``. The
host is `--host` when given, else the target URL's host name.
"""

from __future__ import annotations

import math
import ssl
import time
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fleetmedic.schemas import MetricBatch

from .promcanon import canonical
from .promtext import PromParseError, is_sentinel, parse
from .series import host_name

# A scrape body is at most this (a node_exporter or dcgm page is well under 2 MB); a larger one is an
# error for that target. What is kept is split under the record limit when published (ingest/split.py).
MAX_BODY = 16 * 1024 * 1024


@dataclass
class Target:
    url: str
    host: str

    @classmethod
    def of(cls, url: str, host: str | None = None) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        return cls(url, host_name(host or parts.hostname))


def scrape(
    target: Target,
    timeout_s: float = 5.0,
    now: datetime | None = None,
    drop_labels: frozenset[str] = frozenset(),
    canonical_names: bool = False,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[MetricBatch, str | None]:
    """One scrape → (batch, error or None). Never raises for a target's fault. Labels named in
    `drop_labels` (e.g. dcgm's DCGM_FI_DRIVER_VERSION, modelName) are left out of series names;
    `canonical_names` adds fleetmedic's names for the series it knows (see `ingest.promcanon`).
    `headers` (an Authorization bearer token) and `ssl_context` (CA, client certificate) go with
    the request (see `ingest.promsd.ScrapeAuth`)."""
    now = now or datetime.now(UTC)
    started = time.monotonic()
    values: dict[str, float | None] = {}
    counters: list[str] = []
    error = None
    dropped = 0
    try:
        req = urllib.request.Request(
            target.url,
            headers={"Accept": "text/plain;version=0.0.4", "User-Agent": "fleetmedic-prom-bridge", **(headers or {})},
        )
        with urllib.request.urlopen(req, timeout=timeout_s, context=ssl_context) as resp:
            body = resp.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise ValueError(f"response larger than {MAX_BODY} bytes")
        kept = []
        for s in parse(body.decode("utf-8", "replace")):
            if not math.isfinite(s.value) or is_sentinel(s.name, s.value):
                dropped += 1
                continue
            kept.append(s)
            if drop_labels:
                s = replace(s, labels=tuple((k, v) for k, v in s.labels if k not in drop_labels))
            series = s.series
            if len(series) > 512:
                dropped += 1
                continue
            values[series] = s.value
            if s.is_counter:
                counters.append(series)
        if canonical_names:
            extra, extra_counters = canonical(kept)
            values.update(extra)
            counters += extra_counters
    except (OSError, ValueError, PromParseError) as exc:  # URLError/timeouts are OSError
        error = f"{type(exc).__name__}: {exc}"
        values, counters = {}, []
    values["up"] = 0.0 if error else 1.0
    values["scrape_duration_seconds"] = round(time.monotonic() - started, 6)
    values["scrape_samples_dropped"] = float(dropped)
    batch = MetricBatch(
        host=target.host,
        time=now,
        source="prom",
        labels={"target": target.url[:500]},
        values=values,
        counters=sorted(set(counters)),
    )
    return batch, error
