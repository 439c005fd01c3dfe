"""Incident review: replay topic ranges through the detectors, diff against what happened, and
render reports. Depends on every stage before it (ingest ← detectors ← remediator ← review)."""
