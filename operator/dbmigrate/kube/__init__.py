"""Kubernetes I/O other than kopf's own: Secrets, ConfigMaps, Deployments (rollout status and
undo), Jobs, events, Argo CD Applications."""
