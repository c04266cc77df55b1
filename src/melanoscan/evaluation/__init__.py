"""Metrics, calibration and reports on labelled data."""
