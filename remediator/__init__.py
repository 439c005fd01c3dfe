"""remediator stage (see docs/architecture.md and docs/remediator.md)."""
