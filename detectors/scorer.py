"""The contracts between the detection engine and the models it runs, as code.

Two kinds of model, two contracts:

- `Scorer`: a per-series model (EWMA, static threshold, the surprise-record and likelihood
  banks). State is one row per series *slot* in numpy arrays; the engine runs a whole round of
  values, one per slot, as one call and puts the alert lifecycle (`detectors.alerting`) behind it.
- `PartitionRule`: a model over whole metric batches whose state follows source partitions, not
  hosts (the isolation forests, `detectors.multivariate.ForestRule`): it is offered every batch,
  scores at the end of the batch and checkpoints itself in its own state records.

`SlotBank` is the slot-array bookkeeping the array scorers share (grow on demand, state size).
tests/test_scorer_contract.py runs the same checks over every scorer the configuration can name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from fleetmedic.schemas import DetectorState, Incident, MetricBatch
    from fleetmedic.transport import Received


@runtime_checkable
class Scorer(Protocol):
    """A per-series model: one value per slot in, (score, breach, clear) per value out.

    The contract, which the engine relies on and tests/test_scorer_contract.py checks:

    - **Slots.** A slot is one series; `grow(n)` makes slots ``0..n-1`` exist. Slots that
      existed keep their state; new ones start in the fresh state (each series warms up on its
      own). `grow` never shrinks, and may replace the state arrays (hold no reference to them
      across a `grow`).
    - **State.** `state_fields` names the attributes that hold *all* of a slot's learned state:
      numpy arrays whose first axis is the slot. Everything else is fixed by the constructor's
      parameters. The engine snapshots a slot by reading row ``slot`` of each array and restores
      it by writing that row in place into a grown scorer built with the same parameters (not
      necessarily at the same slot number): the restored slot then gives exactly the outputs
      the original would have.
    - **update(slots, values, times)** scores, then learns, one value per slot: ``slots`` are
      distinct within a call, ``values`` finite (the engine drops nulls, NaN and stale values
      before), ``times`` event seconds, increasing per slot across calls. The score of a value
      is computed from the slot's state *before* the value is learned, and a slot's output and
      state depend only on that slot's own earlier values: one call over many slots gives the
      same outputs as one call per slot, in any order (the engine's rounds rely on it). Returns
      three arrays aligned with ``slots``: ``score`` (float, the incident's evidence), ``breach``
      (bool, anomalous) and ``clear`` (bool, normal enough to count towards resolving; a value
      may be neither, for hysteresis).
    - **details(slot)**: flat JSON scalars (str → int or float) describing the slot's state, for
      an incident's evidence. It reads; it changes nothing.
    - **nbytes_per_slot**: bytes of state per slot (benchmarks, capacity planning).
    - **Deterministic**: the same parameters and the same calls give the same outputs, bit for bit.
    """

    @property
    def state_fields(self) -> tuple[str, ...]: ...

    @property
    def nbytes_per_slot(self) -> int: ...

    def grow(self, n: int) -> None: ...

    def update(
        self, slots: np.ndarray, values: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def details(self, slot: int) -> dict[str, float]: ...


@runtime_checkable
class PartitionRule(Protocol):
    """A model over whole metric batches whose state follows source partitions.

    The engine's side of the contract:

    - `offer` is called for every metric batch in offset order, before the engine's own checks
      (the rule's checkpoint covers its own offsets, so it skips what its restored state covers);
      nothing is scored yet. ``values`` are the batch's values as floats (null → NaN);
      ``host_labels`` the host's last known labels (for a batch that carries none); ``emit``
      False while replaying records whose incidents were produced before the last commit.
    - `flush` at the end of the engine's batch scores what was offered and returns
      (record, emit, incident) for each incident, in offer order. The outputs are a pure
      function of each partition's records in order: batch boundaries, partition interleaving
      and restarts do not change them.
    - `take_dirty` returns a state record for each part changed since its last one (only those
      of ``partitions`` when given); ``detector`` names them and ``positions`` gives the next
      offset per (topic, partition), which each record says it covers.
    - `restore` loads one of those records (one from other settings may be ignored); `forget`
      drops the state of (topic, partition)s that moved away.
    """

    def offer(
        self, item: Received, record: MetricBatch, values: np.ndarray, host_labels: dict[str, str] | None, emit: bool
    ) -> None: ...

    def flush(self) -> list[tuple[Received, bool, Incident]]: ...

    def take_dirty(
        self, detector: str, positions: dict[tuple[str, int], int], partitions: set[int] | None = None
    ) -> list[DetectorState]: ...

    def restore(self, state: DetectorState) -> None: ...

    def forget(self, partitions: set[tuple[str, int]]) -> None: ...


class SlotBank:
    """Slot-array bookkeeping for a scorer whose state is rows of numpy arrays, grown on demand.

    A subclass lists its arrays in `state_fields` and makes them in `_fresh(capacity)` (fresh
    state in every row); its constructor sets ``n_series = 0`` and calls ``_alloc(capacity)``.
    Rows ``0..n_series-1`` are in use; growing doubles the capacity (or more, for a big request)
    and copies the rows there are.
    """

    state_fields: tuple[str, ...] = ()
    n_series: int
    capacity: int

    def _fresh(self, capacity: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _alloc(self, capacity: int) -> None:
        for name, arr in self._fresh(capacity).items():
            old = getattr(self, name, None)
            if old is not None:
                arr[: len(old)] = old
            setattr(self, name, arr)
        self.capacity = capacity

    def add_series(self, n: int = 1) -> np.ndarray:
        """Rows for ``n`` new series (state starts empty: each warms up on its own)."""
        if self.n_series + n > self.capacity:
            self._alloc(max(2 * self.capacity, self.n_series + n))
        rows = np.arange(self.n_series, self.n_series + n)
        self.n_series += n
        return rows

    @property
    def nbytes_per_slot(self) -> int:
        """Bytes of state per row (the season tables included)."""
        return sum(getattr(self, f)[:1].nbytes for f in self.state_fields)

    def grow(self, n: int) -> None:
        """Make sure rows 0..n-1 exist."""
        if n > self.n_series:
            self.add_series(n - self.n_series)
