"""The Prometheus bridge at fleet scale: file service discovery, concurrent scrapes, TLS and tokens.

Targets come from Prometheus-style file service discovery (`file_sd_configs`): JSON or YAML
files (by extension: .json, .yml, .yaml), each a list of groups::

    [{"targets": ["10.0.0.7:9100", "gpu-node-08:9400"],
      "labels": {"class": "h100x8", "__metrics_path__": "/metrics", "__scheme__": "https",
                 "__scrape_interval__": "15s", "__scrape_timeout__": "5s"}}]

Labels that start with ``__`` steer the scrape (as in Prometheus: scheme, path, interval and
timeout per target); the others travel as the batch's labels. The host is the ``host`` label
when set, else the target's host name. Files (globs allowed) are re-read when their modification
time or size changes; a file that cannot be read or parsed keeps its previous targets and the
error is reported once per change.

`ScrapePool` scrapes every target on its own interval from a thread pool: each target's first
scrape is spread over its interval by a hash of its URL (like Prometheus), a target whose
previous scrape is still running is not started again (counted as `skipped`). A scheduler
thread starts the scrapes; finished batches are collected by the caller's thread (`poll`),
which publishes them, so a slow broker never delays a scrape.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import json
import logging
import os
import queue
import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fleetmedic.schemas import MetricBatch

from .prom import Target, scrape
from .series import host_name

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


class SDError(ValueError):
    """A target file that is not valid file_sd content (path and reason in the message)."""


def parse_duration(text: str) -> float:
    """A Prometheus duration (``15s``, ``1m30s``, ``500ms``) in seconds.

    >>> parse_duration("1m30s"), parse_duration("500ms"), parse_duration("15s")
    (90.0, 0.5, 15.0)
    """
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration like 15s, 1m or 500ms")
    h, mi, s, ms = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


@dataclass(frozen=True)
class SDTarget:
    """One target of a target file, with what its labels ask for."""

    url: str
    host: str
    labels: tuple[tuple[str, str], ...]
    interval_s: float
    timeout_s: float
    source: str  # the file it came from

    @property
    def key(self) -> str:
        return self.url


def _group_targets(group, path: str, index: int, default_interval_s: float, default_timeout_s: float):
    if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
        raise SDError(f"{path}: group {index}: expected an object with a `targets` list")
    labels = group.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise SDError(f"{path}: group {index}: `labels` must map strings to strings")
    scheme = labels.get("__scheme__", "http")
    if scheme not in ("http", "https"):
        raise SDError(f"{path}: group {index}: __scheme__ {scheme!r} is not http or https")
    metrics_path = labels.get("__metrics_path__", "/metrics")
    if not metrics_path.startswith("/"):
        raise SDError(f"{path}: group {index}: __metrics_path__ must start with /")
    try:
        interval = (
            parse_duration(labels["__scrape_interval__"]) if "__scrape_interval__" in labels else default_interval_s
        )
        timeout = parse_duration(labels["__scrape_timeout__"]) if "__scrape_timeout__" in labels else default_timeout_s
    except ValueError as exc:
        raise SDError(f"{path}: group {index}: {exc}") from None
    if interval <= 0:
        raise SDError(f"{path}: group {index}: the scrape interval must be positive")
    timeout = min(timeout, interval)
    kept = tuple(sorted((k, v) for k, v in labels.items() if not k.startswith("__")))
    out = []
    for address in group["targets"]:
        if not isinstance(address, str) or not re.fullmatch(r"[A-Za-z0-9._\-\[\]:]+", address):
            raise SDError(f"{path}: group {index}: target {address!r} is not host:port")
        url = f"{scheme}://{address}{metrics_path}"
        try:
            target = Target.of(url, dict(kept).get("host"))
        except ValueError as exc:
            raise SDError(f"{path}: group {index}: {exc}") from None
        out.append(SDTarget(url, host_name(target.host), kept, interval, timeout, path))
    return out


def load_target_file(path: str, default_interval_s: float = 15.0, default_timeout_s: float = 10.0) -> list[SDTarget]:
    """The targets of one file_sd file; SDError says which file and group is wrong."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SDError(f"{path}: cannot read: {exc}") from None
    try:
        groups = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SDError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}") from None
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise SDError(f"{path}: expected a list of target groups")
    out = []
    for i, group in enumerate(groups):
        out += _group_targets(group, path, i, default_interval_s, default_timeout_s)
    return out


class FileSD:
    """The targets of some file_sd files (glob patterns), re-read when a file changes."""

    def __init__(
        self,
        patterns: list[str],
        default_interval_s: float = 15.0,
        default_timeout_s: float = 10.0,
        refresh_s: float = 5.0,
    ) -> None:
        self.patterns = list(patterns)
        self.default_interval_s = default_interval_s
        self.default_timeout_s = default_timeout_s
        self.refresh_s = refresh_s
        self._seen: dict[str, tuple[float, int]] = {}
        self._by_file: dict[str, list[SDTarget]] = {}
        self.errors: dict[str, str] = {}
        self._next = 0.0
        self.reloads = 0

    def files(self) -> list[str]:
        found: set[str] = set()
        for pattern in self.patterns:
            found.update(p for p in glob.glob(pattern) if os.path.isfile(p))
        return sorted(found)

    def refresh(self, force: bool = False) -> bool:
        """Re-read changed, new and removed files (at most every `refresh_s`); True when targets changed."""
        now = time.monotonic()
        if not force and now < self._next:
            return False
        self._next = now + self.refresh_s
        changed = False
        files = self.files()
        for gone in set(self._by_file) - set(files):
            del self._by_file[gone]
            self._seen.pop(gone, None)
            self.errors.pop(gone, None)
            changed = True
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = (st.st_mtime, st.st_size)
            if self._seen.get(path) == stamp:
                continue
            self._seen[path] = stamp
            try:
                targets = load_target_file(path, self.default_interval_s, self.default_timeout_s)
            except SDError as exc:
                self.errors[path] = str(exc)
                log.error("file_sd: %s (keeping its previous %d targets)", exc, len(self._by_file.get(path, ())))
                continue
            self.errors.pop(path, None)
            if targets != self._by_file.get(path):
                self._by_file[path] = targets
                changed = True
        if changed:
            self.reloads += 1
        return changed

    def targets(self) -> list[SDTarget]:
        """Every target once (the first file, in path order, wins for a URL in two files)."""
        out: dict[str, SDTarget] = {}
        for path in sorted(self._by_file):
            for t in self._by_file[path]:
                out.setdefault(t.key, t)
        return list(out.values())


@dataclass(frozen=True)
class ScrapeAuth:
    """TLS and bearer-token options for every scrape (as a Prometheus scrape config's)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    bearer_token_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.ca_file or self.cert_file or self.insecure_skip_verify):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def headers(self) -> dict[str, str]:
        """The Authorization header; the token file is read at every call, so a rotated token is used."""
        if not self.bearer_token_file:
            return {}
        token = Path(self.bearer_token_file).read_text().strip()
        return {"Authorization": f"Bearer {token}"}


@dataclass
class PoolStats:
    scrapes: int = 0
    failed: int = 0
    skipped: int = 0  # due while the previous scrape of the target still ran
    # (due time on the monotonic clock, start delay after it) of finished scrapes, the first `keep_late`
    late_s: list[tuple[float, float]] = field(default_factory=list)


def _spread(url: str, interval_s: float) -> float:
    digest = hashlib.sha256(url.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval_s


class ScrapePool:
    """Scrape each target on its own interval from `workers` threads; `poll()` returns finished batches."""

    def __init__(
        self,
        workers: int = 64,
        auth: ScrapeAuth | None = None,
        drop_labels: frozenset[str] = frozenset(),
        canonical_names: bool = False,
        keep_late: int = 10_000,
    ) -> None:
        self.auth = auth or ScrapeAuth()
        self._ssl = self.auth.ssl_context()
        self.drop_labels = drop_labels
        self.canonical_names = canonical_names
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrape")
        self._targets: dict[str, SDTarget] = {}
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._running: set[str] = set()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.stats = PoolStats()
        self.keep_late = keep_late
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._scheduler = threading.Thread(target=self._schedule, name="scrape-scheduler", daemon=True)
        self._scheduler.start()

    def set_targets(self, targets: list[SDTarget]) -> None:
        """Replace the target set; kept targets keep their schedule, new ones are spread over their interval."""
        now = time.monotonic()
        new = {t.key: t for t in targets}
        with self._lock:
            for key, t in new.items():
                old = self._targets.get(key)
                if old is None or old.interval_s != t.interval_s:
                    due = now + _spread(key, t.interval_s)
                    self._due[key] = due
                    heapq.heappush(self._heap, (due, key))
            for key in set(self._targets) - set(new):
                self._due.pop(key, None)
            self._targets = new
        self._wake.set()

    def __len__(self) -> int:
        return len(self._targets)

    @property
    def urls(self) -> set[str]:
        with self._lock:
            return set(self._targets)

    def _scrape(self, target: SDTarget, due: float) -> None:
        started = time.monotonic()
        try:
            batch, error = scrape(
                Target(target.url, target.host),
                timeout_s=target.timeout_s,
                drop_labels=self.drop_labels,
                canonical_names=self.canonical_names,
                headers=self.auth.headers(),
                ssl_context=self._ssl,
            )
            if target.labels:
                batch = batch.model_copy(update={"labels": {**batch.labels, **dict(target.labels)}})
        except Exception as exc:  # a token file that vanished, anything: the target is down, the pool lives
            batch, error = None, f"{type(exc).__name__}: {exc}"
        self._done.put((target, batch, error, (due, started - due)))

    def _start_due(self) -> float:
        """Submit the scrapes that are due (under the lock); returns seconds until the next one."""
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            due, key = heapq.heappop(self._heap)
            if self._due.get(key) != due:
                continue  # removed, or rescheduled
            target = self._targets[key]
            next_due = due + target.interval_s
            if next_due <= now:  # fell far behind: do not burst to catch up
                next_due = now + target.interval_s
            self._due[key] = next_due
            heapq.heappush(self._heap, (next_due, key))
            if key in self._running:
                self.stats.skipped += 1
                continue
            if self._closed.is_set():
                break
            self._running.add(key)
            self._pool.submit(self._scrape, target, due)
        return (self._heap[0][0] - now) if self._heap else 1.0

    def _schedule(self) -> None:
        # Its own thread, so a slow publish in the caller's thread never delays a scrape's start.
        while not self._closed.is_set():
            with self._lock:
                wait = self._start_due()
            self._wake.wait(min(max(wait, 0.0), 1.0))
            self._wake.clear()

    def poll(self) -> list[tuple[SDTarget, MetricBatch, str | None]]:
        """(target, batch, error) of the scrapes finished since the last call (starting them is the
        pool's own scheduler thread's job)."""
        out = []
        while True:
            try:
                target, batch, error, late = self._done.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._running.discard(target.key)
                current = target.key in self._targets
            self.stats.scrapes += 1
            if error:
                self.stats.failed += 1
            if len(self.stats.late_s) < self.keep_late:
                self.stats.late_s.append(late)
            if current and batch is not None:
                out.append((target, batch, error))
        return out

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._lock:  # the scheduler submits under the lock: after this it submits nothing more
            pass
        self._scheduler.join(30)
        self._pool.shutdown(wait=True, cancel_futures=True)
