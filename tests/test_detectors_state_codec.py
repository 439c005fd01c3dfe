"""The byte layout of a host's detector state: both versions decode to the same thing."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest

from detectors import state_codec


def sample_arrays():
    return [
        ("last_time", np.array([1.5, -np.inf, np.nan])),
        ("0.pos", np.arange(3)),
        ("0.count", np.array([1, 2, 3], np.uint32)),
        ("0.status", np.array([0, 1, 2], np.int8)),
        ("1.record_", np.arange(12, dtype=np.float64).reshape(3, 4)),  # a 2-D state array (univariate)
        ("1.flag", np.array([True, False, True])),
        ("2.empty", np.zeros(0, np.float64)),
        ("3.big_endian", np.array([1.25, 2.5], dtype=">f8")),
    ]


def test_round_trip_keeps_names_dtypes_shapes_and_values():
    header = {"max_time": 10.0, "log_max_time": -np.inf, "labels": {"class": "h100"}, "rules": {"r": 0}}
    names = ["gpu0.power_w", "naïve\nname", "\u0000odd", "fs./.free_pct"]
    table = state_codec.encode_table(names, sample_arrays())
    blob = state_codec.encode(header, table, [a for _, a in sample_arrays()])
    got_header, got_names, got = state_codec.decode(blob)
    assert got_header == header and got_names == names
    for key, a in sample_arrays():
        assert got[key].shape == a.shape and got[key].dtype == a.dtype.newbyteorder("<")
        np.testing.assert_array_equal(got[key], a)


def test_truncated_or_padded_payloads_are_refused():
    table = state_codec.encode_table(["a"], sample_arrays())
    raw = zlib.decompress(state_codec.encode({}, table, [a for _, a in sample_arrays()]))
    for bad in (raw[:-1], raw + b"\0", raw[:3]):
        with pytest.raises(ValueError):
            state_codec.decode(zlib.compress(bad))


def test_version_1_npz_payload_decodes_to_the_same_parts():
    header = {"max_time": 10.0, "rules": {"r": 0}}
    buf = io.BytesIO()
    arrays = {k: a for k, a in sample_arrays() if k != "3.big_endian"}
    np.savez(
        buf,
        names=np.array(["a", "b"], dtype=str),
        header=np.frombuffer(json.dumps(header).encode(), np.uint8),
        **arrays,
    )
    got_header, names, got = state_codec.decode_v1(zlib.compress(buf.getvalue(), 1))
    assert got_header == header and names == ["a", "b"] and got.keys() == arrays.keys()
    for key, a in arrays.items():
        np.testing.assert_array_equal(got[key], a)
