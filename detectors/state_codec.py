"""The byte layout of a host's detector state in its `DetectorState` record (`state_b64`, before base64).

Version 2 (written now): one zlib stream (level 1) of

    u32 header length | header: UTF-8 JSON | u32 table length | table: UTF-8 JSON | array bytes ...

The header is the engine's (times, labels, rules, log and fault-model state). The table is
`{"names": [series names], "arrays": [[key, dtype, shape], ...]}`, naming the arrays that follow,
in order, as raw little-endian C-order bytes (`dtype` as numpy writes it, e.g. `<f8`). The table
is a part of its own because it changes only when the host gains a series: the engine encodes it
once per host and reuses the bytes (encoding it was a third of a snapshot's cost).

Version 1 (read only, written before): a zlib-compressed `.npz` holding the names (a unicode
array), the same arrays under the same keys, and the header as UTF-8 bytes under `header`. Its
per-array zip entries and `.npy` headers cost most of a checkpoint, hence version 2.

Both decoders return the same thing: (header, names, arrays by key).
"""

from __future__ import annotations

import io
import json
import math
import struct
import sys
import zlib

import numpy as np

_U32 = struct.Struct("<I")


def encode_table(names: list[str], arrays: list[tuple[str, np.ndarray]]) -> bytes:
    """The table part of a payload: the series names and the key, dtype and shape of every array.

    It depends only on the host's series table and the arrays' types, not on their values: the
    engine encodes it once per host and passes it to `encode` until the host gains a series.
    """
    layout = [[key, _little_endian(a).dtype.str, list(a.shape)] for key, a in arrays]
    return json.dumps({"names": names, "arrays": layout}, separators=(",", ":"), ensure_ascii=False).encode()


def encode(header: dict, table_json: bytes, arrays: list[np.ndarray]) -> bytes:
    """The version-2 payload: the header, the table (already encoded) and the arrays in the table's order."""
    header_json = json.dumps(header, separators=(",", ":")).encode()
    parts = [_U32.pack(len(header_json)), header_json, _U32.pack(len(table_json)), table_json]
    parts += [_little_endian(a).tobytes() for a in arrays]
    return zlib.compress(b"".join(parts), 1)


# A payload inflates to at most this: a hostile record (a zlib bomb) is refused, not expanded.
MAX_INFLATED_BYTES = 256 * 1024 * 1024


def _inflate(payload: bytes) -> bytes:
    d = zlib.decompressobj()
    raw = d.decompress(payload, MAX_INFLATED_BYTES)
    if d.unconsumed_tail:
        raise ValueError(f"state payload inflates to more than {MAX_INFLATED_BYTES} bytes")
    return raw


def decode(payload: bytes) -> tuple[dict, list[str], dict[str, np.ndarray]]:
    raw = _inflate(payload)
    header_json, at = _chunk(raw, 0)
    table_json, at = _chunk(raw, at)
    header, table = json.loads(header_json), json.loads(table_json)
    arrays = {}
    for key, dtype, shape in table["arrays"]:
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        if at + count * dtype.itemsize > len(raw):
            raise ValueError(f"state payload ends inside array {key!r}")
        arrays[key] = np.frombuffer(raw, dtype, count, at).reshape(shape)
        at += count * dtype.itemsize
    if at != len(raw):
        raise ValueError(f"state payload has {len(raw) - at} bytes after its arrays")
    return header, table["names"], arrays


def decode_v1(payload: bytes) -> tuple[dict, list[str], dict[str, np.ndarray]]:
    data = np.load(io.BytesIO(_inflate(payload)), allow_pickle=False)
    arrays = {key: data[key] for key in data.files}
    header = json.loads(arrays.pop("header").tobytes())
    return header, arrays.pop("names").tolist(), arrays


def _chunk(raw: bytes, at: int) -> tuple[bytes, int]:
    """A length-prefixed part of the payload and where the next one starts."""
    if at + _U32.size > len(raw):
        raise ValueError("state payload truncated")
    (n,) = _U32.unpack_from(raw, at)
    end = at + _U32.size + n
    if end > len(raw):
        raise ValueError("state payload truncated")
    return raw[at + _U32.size : end], end


def _little_endian(a: np.ndarray) -> np.ndarray:
    """`a`, converted only where its bytes are not little-endian already (never, on x86 and ARM)."""
    order = a.dtype.byteorder
    if order == ">" or (order == "=" and not _NATIVE_LITTLE):
        return a.astype(a.dtype.newbyteorder("<"))
    return a


_NATIVE_LITTLE = sys.byteorder == "little"
