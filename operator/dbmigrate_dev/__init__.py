"""Development tooling, never shipped: local stand-ins for production infrastructure, used by the
tests, the demo and the benchmarks: a throwaway PostgreSQL, Prometheus, a test app with
adjustable SLOs, a cluster client, the demo/test stack and the local kubelet (pod executor).

Not in the wheel or the image (pyproject.toml packages only `dbmigrate`); the editable install
of the development virtualenv puts `operator/` on sys.path, which makes it importable there.
The operator never imports it (import-linter enforces it).
"""
