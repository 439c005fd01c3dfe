"""remediator stage (see DESIGN.md)."""
