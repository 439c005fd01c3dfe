"""detectors stage (see docs/architecture.md and docs/detectors.md)."""
