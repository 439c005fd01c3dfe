"""fleetmedic: keep a GPU/AI fleet healthy without waking a human.

This core package holds what every stage shares: the wire contracts (`schemas`), the
configuration (`config`), the Kafka plumbing (`transport`, `topics`), the embedded broker
(`broker`) and the command line (`cli`). Stage code lives in the top-level `ingest`,
`detectors` and `remediator` packages.
"""

__version__ = "0.1.0"
