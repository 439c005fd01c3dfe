"""Node exporters: host, GPU and log signals, a Prometheus bridge and a fleet simulator.

Every exporter publishes `MetricBatch` and `LogEvent` records through one `Publisher`, which
sends with the shared producer and spools to local disk while the broker is unreachable.
Series names are documented in docs/ingest.md and built by `ingest.series`.
"""
