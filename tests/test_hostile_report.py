"""The report draws any series name, host and subject as written (issue 13)."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import numpy as np
from examples import T0

from fleetmedic.schemas import Evidence, Incident
from review.collect import HostReview, Series
from review.report import render

NAMES = [
    "cost$_{",
    "a$b$c",
    'price{unit="$"}',
    "x$^$y",
    "q\"uo'te",
    "</script><script>alert(1)</script>",
    "温度.gpu0 🔥",
    "\\frac{1}{0}$",
    "$$",
    "tab\there",
]


def test_any_series_name_is_drawn_and_escaped():
    times = np.array([np.datetime64((T0 + timedelta(seconds=10 * i)).replace(tzinfo=None), "ms") for i in range(30)])
    review = HostReview("node-x", T0, T0 + timedelta(seconds=300))
    for k, name in enumerate(NAMES):
        review.series[name] = Series(times, np.sin(np.arange(30) + k))
    review.incidents = [
        Incident(
            id="i1",
            fingerprint="f",
            host="node-x",
            kind="k$",
            subject="s$_{",
            status="open",
            severity="warning",
            detector="d",
            time=T0 + timedelta(seconds=60),
            opened_at=T0 + timedelta(seconds=60),
            evidence=Evidence(series=NAMES[:3]),
        )
    ]
    page = render(review)  # before the fix: matplotlib's mathtext raised ValueError on `cost$_{`
    assert "<script>" not in page and "&lt;/script&gt;" in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 1 + min(len(NAMES), 8)
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
