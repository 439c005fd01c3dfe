"""The detection engine: metric batches and log events in, incident records out, by event time.

`Engine` is the Kafka-free core (feed it `Received` records, get incidents back), composed of
its parts, one job each:
- the series table (detectors/series_table.py): a slot per (host, series name), cached layouts;
- round processing (detectors/rounds.py): a batch in rounds, every rule a few numpy operations;
- state (detectors/engine_state.py): a host's snapshot and restore, forgetting and compaction;
- the rules: per series `SeriesRule` (detectors/series_rule.py), per host the fault model's
  `FaultRule` (detectors/fault_rule.py), the log rules (detectors/log_rules.py) and the
  isolation forests (`ForestRule`, detectors/multivariate.py).
`detectors.service.DetectService` runs it as a consumer-group member on
`fleetmedic.transport.ConsumerLoop` with its state checkpointed to the compacted state topic.

Messy streams (the documented rules):
- event time only: every decision uses record timestamps, never the wall clock;
- null values (and NaN) are gaps: the series' state is left untouched;
- a record older than its host's newest event time (on the same topic) by more than
  `late_tolerance_s` is dropped and counted (`dropped_late`); within the tolerance each value is used only if it is
  newer than its series' last value (older ones are counted as `stale_values`): per series, time only moves
  forward;
- counters (names in the record's `counters`) are turned into per-second rates between
  consecutive samples; a decrease is a counter reset (counted): the rate is taken from zero;
- a series that appears mid-stream gets its own fresh state and warms up on its own;
- a gap longer than `max_gap_s` restarts a pending `for` (it needs consecutive breaching values);
- isolation forests each follow one source partition, refit by event time and keep their own
  checkpoints and covered offsets (detectors/multivariate.py), so partition interleaving, batch
  boundaries and restarts do not change them;
- an XID burst resolves on the host's next log event after the quiet window (resolve time = last
  XID + window). Only log events decide it: metrics and logs are separate topics whose relative
  arrival order is not fixed, so letting metric time close a burst would make replays differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetmedic.transport import Received

from .config import DetectorConfig
from .engine_state import EngineState
from .fault_rule import FaultRule
from .log_rules import LogRules, load_table
from .multivariate import ForestRule
from .rounds import RoundProcessing
from .series_rule import SeriesRule
from .series_table import HostState

STATE_DETECTOR = "engine"


@dataclass
class EngineStats:
    """The engine's counters: records and values processed, and what was dropped, skipped, suppressed or raised."""

    records: int = 0
    values: int = 0
    null_values: int = 0
    stale_values: int = 0
    dropped_late: int = 0
    counter_resets: int = 0
    skipped_restored: int = 0
    future_dead_lettered: int = 0  # event time too far ahead of the broker timestamp (detectors/eventtime.py)
    series_over_cap: int = 0  # values of series beyond a host's max_series_per_host: not tracked
    hosts_over_cap: int = 0  # records of hosts beyond max_hosts: not used
    unreadable_states: int = 0  # snapshots that could not be restored: the host started fresh
    snapshots_too_large: int = 0  # host snapshots over the state record limit: not written (see DetectService)
    suppressed: int = 0
    incidents: int = 0
    compactions: int = 0  # series slot tables renumbered after hosts left (Engine.compact)


class Engine(RoundProcessing, EngineState):
    """Event-time detection over metric batches and log events; deterministic for a given input order."""

    # the parts see the forests as a PartitionRule (detectors/scorer.py); the engine's owner also
    # reads the concrete rule's counters (`fleetmedic detect` prints them at the end)
    forests: ForestRule | None

    def __init__(self, config: DetectorConfig, state_name: str = STATE_DETECTOR):
        self.config = config
        self.state_name = state_name  # the `detector` of its state records: one per consumer group
        self.rules = [
            SeriesRule.from_config(c, config.max_gap_s) for c in (*config.static, *config.ewma, *config.univariate)
        ]
        self.rule_local = [np.zeros(0, np.int32) for _ in self.rules]  # global slot → rule slot (-1: none)
        self.rule_global = [np.zeros(0, np.int64) for _ in self.rules]  # rule slot → global slot
        self.logs = (
            LogRules(load_table(config.log_rules.table), config.log_rules.burst_window_s)
            if config.log_rules.enabled
            else None
        )
        self.fault = FaultRule(config.fault_model, config.max_gap_s) if config.fault_model else None
        # isolation forests per (host class, partition): their own state and offsets (detectors/multivariate.py)
        self.forests = (
            ForestRule(config.iforest, config.max_gap_s)
            if config.iforest is not None and config.iforest.enabled
            else None
        )
        self.hosts: dict[str, HostState] = {}
        self.slot_host: list[HostState] = []
        self.slot_name: list[str] = []
        self.last_time = np.zeros(0, np.float64)
        self.prev_value = np.zeros(0, np.float64)
        self._rules_for_name: dict[str, tuple[int, ...]] = {}
        self.stats = EngineStats()
        self.positions: dict[tuple[str, int], int] = {}  # (topic, partition) → next offset processed
        self.replay_until: dict[tuple[str, int], int] = {}  # outputs below these offsets were produced already
        self.skip_below: dict[str, dict[tuple[str, int], int]] = {}  # host → offsets its restored state covers
        self.dirty: set[str] = set()
        self.out_of_skew: list[tuple[Received, float]] = []  # (record, event time) to dead-letter; taken by the service
