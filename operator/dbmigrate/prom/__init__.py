"""Prometheus HTTP API client used by the SLO analysis."""
