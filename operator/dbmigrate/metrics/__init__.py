"""The operator's own Prometheus metrics (prometheus-client registry and metric objects)."""
