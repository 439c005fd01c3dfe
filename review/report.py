"""`fleetmedic report`: one self-contained HTML page per incident or time range.

The page puts the series (with the EWMA band the detectors judge them against), the log lines,
the incident lifecycle, every remediation decision (skips and their reasons included) and the
playbook outcomes on one timeline. Plots are PNGs embedded as data URIs, so the page opens
offline and can be attached to a ticket.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from .collect import HostReview, Series

STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "dry_run": "#0277bd",
    "running": "#6a1b9a",
    "claimed": "#6a1b9a",
    "planned": "#546e7a",
    "skipped": "#ef6c00",
    "awaiting_approval": "#f9a825",
    "failed": "#c62828",
    "timed_out": "#c62828",
    "cancelled": "#8d6e63",
    "escalated": "#ad1457",
}
SEVERITY_COLOURS = {"info": "#90caf9", "warning": "#ffcc80", "critical": "#ef9a9a"}


def ewma_band(values: np.ndarray, alpha: float = 0.1, sigmas: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Causal EWMA mean and standard deviation (the value at i uses points before i); NaN skipped."""
    mean = np.full(values.shape, np.nan)
    std = np.full(values.shape, np.nan)
    m: float | None = None
    v = 0.0  # read only once m is set
    for i, x in enumerate(values):
        if m is not None:
            mean[i], std[i] = m, np.sqrt(v)
        if np.isnan(x):
            continue
        if m is None:
            m, v = x, 0.0
        else:
            d = x - m
            m += alpha * d
            v = (1 - alpha) * (v + alpha * d * d)
    return mean, std * sigmas


def _plain(text: str) -> str:
    """Text for a plot label, shown as written: matplotlib reads `$...$` as math (a series name with
    `$` in it could not be drawn), and an escaped `\\$` is a literal dollar sign."""
    return text.replace("$", r"\$")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _t(when: datetime):
    return np.datetime64(when.replace(tzinfo=None), "ms")


def _incident_spans(review: HostReview) -> dict[str, dict[str, Any]]:
    spans: dict[str, dict[str, Any]] = {}
    for r in review.incidents:
        s = spans.setdefault(
            r.id,
            {"start": r.opened_at, "end": review.end, "severity": r.severity, "kind": r.kind, "subject": r.subject},
        )
        if r.status == "resolve":
            s["end"] = r.time
        s["severity"] = r.severity
    return spans


def _mark_events(ax, review: HostReview, spans) -> None:
    for s in spans.values():
        ax.axvspan(_t(s["start"]), _t(s["end"]), color=SEVERITY_COLOURS.get(s["severity"], "#eeeeee"), alpha=0.35, lw=0)
    for r in review.remediations:
        if r.status in ("running", "succeeded", "failed", "dry_run", "skipped", "timed_out"):
            ax.axvline(_t(r.time), color=STATUS_COLOURS.get(r.status, "#555"), lw=1, ls="--")


def series_plot(name: str, s: Series, review: HostReview, spans: dict[str, dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.6))
    mean, band = ewma_band(s.values)
    ax.fill_between(s.times, mean - band, mean + band, color="#b0bec5", alpha=0.45, lw=0, label="EWMA ± 3σ")
    ax.plot(s.times, mean, color="#78909c", lw=0.8)
    ax.plot(s.times, s.values, color="#1565c0", lw=1.1, label=_plain(name))
    _mark_events(ax, review, spans)
    ax.set_xlim(_t(review.start), _t(review.end))
    ax.set_title(_plain(name), loc="left", fontsize=10)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def timeline_plot(review: HostReview, spans: dict[str, dict[str, Any]]) -> str:
    lanes = ["logs", "incidents", "remediation"]
    fig, ax = plt.subplots(figsize=(10, 2.4))
    for s in spans.values():
        ax.barh(
            1,
            (_t(s["end"]) - _t(s["start"])).astype("timedelta64[ms]").astype(float) / 86_400_000,
            left=mdates.date2num(_t(s["start"])),
            color=SEVERITY_COLOURS.get(s["severity"]),
            height=0.5,
        )
        ax.text(mdates.date2num(_t(s["start"])), 1.3, _plain(f"{s['kind']}/{s['subject']}"), fontsize=7)
    for ev in review.logs:
        ax.plot(_t(ev.time), 0, "|", color="#c62828" if ev.severity in ("error", "critical") else "#607d8b", ms=12)
    for rem in review.remediations:
        ax.plot(_t(rem.time), 2, "o", color=STATUS_COLOURS.get(rem.status, "#555"), ms=6)
    for status in sorted({r.status for r in review.remediations}):
        ax.plot([], [], "o", color=STATUS_COLOURS.get(status, "#555"), label=_plain(status))
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(-0.7, 2.7)
    ax.set_xlim(_t(review.start), _t(review.end))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.grid(axis="x", alpha=0.3)
    if review.remediations:
        ax.legend(loc="upper right", fontsize=7, ncols=4)
    ax.set_title(_plain(f"{review.host}: timeline"), loc="left", fontsize=10)
    return _png(fig)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pick_series(review: HostReview, limit: int = 8) -> list[str]:
    """Series named in incident evidence first, then the ones that moved most."""
    named = [s for r in review.incidents for s in r.evidence.series if s in review.series]

    def variation(name: str) -> float:  # coefficient of variation; flat or empty series last
        v = review.series[name].values
        if not np.isfinite(v).any():
            return 0.0
        return float(np.nanstd(v) / (abs(np.nanmean(v)) + 1e-9))

    rest = sorted((n for n in review.series if n not in named), key=variation, reverse=True)
    return list(dict.fromkeys(named + rest))[:limit]


def render(review: HostReview, title: str | None = None) -> str:
    spans = _incident_spans(review)
    title = title or f"fleetmedic review: {review.host}"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=meta>host <b>{html.escape(review.host)}</b> · {review.start:%Y-%m-%d %H:%M:%S} → "
        f"{review.end:%Y-%m-%d %H:%M:%S} UTC · {len(review.series)} series · {len(review.logs)} log lines · "
        f"{len(spans)} incidents · {len(review.remediations)} remediation records</p>",
        f"<img alt='timeline' src='{timeline_plot(review, spans)}'>",
        "<h2>Incidents</h2>",
        _table(
            [
                "time",
                "incident",
                "status",
                "severity",
                "kind/subject",
                "detector",
                "score",
                "threshold",
                "model",
                "summary",
            ],
            [
                [
                    f"{r.time:%H:%M:%S}",
                    r.id,
                    r.status,
                    r.severity,
                    f"{r.kind}/{r.subject}",
                    r.detector,
                    None if r.score is None else f"{r.score:.3g}",
                    None if r.threshold is None else f"{r.threshold:.3g}",
                    r.model_version,
                    r.summary,
                ]
                for r in review.incidents
            ],
        ),
        "<h2>Remediation decisions</h2>",
        _table(
            ["time", "incident", "action", "playbook", "step", "status", "gate", "reason", "rc", "run"],
            [
                [
                    f"{r.time:%H:%M:%S}",
                    r.incident_id,
                    r.action,
                    r.playbook,
                    r.step,
                    r.status,
                    r.gate,
                    r.reason,
                    r.rc,
                    None
                    if r.run is None
                    else f"ok={r.run.ok} changed={r.run.changed} failed={r.run.failed}"
                    + (f" ({', '.join(r.run.failed_tasks)})" if r.run.failed_tasks else ""),
                ]
                for r in review.remediations
            ],
        ),
        "<h2>Series</h2>",
    ]
    for name in pick_series(review):
        parts.append(f"<img alt='{html.escape(name)}' src='{series_plot(name, review.series[name], review, spans)}'>")
    parts += [
        "<h2>Log lines</h2>",
        _table(
            ["time", "kind", "severity", "line"],
            [[f"{r.time:%H:%M:%S}", r.kind, r.severity, r.line] for r in review.logs[:500]],
        ),
    ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px;margin-bottom:18px}"
        "td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}"
        "th{background:#f3f5f7}img{display:block;max-width:100%;margin:8px 0}.meta{color:#555}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(review: HostReview, out: Path, title: str | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(review, title), encoding="utf-8")
    return out
