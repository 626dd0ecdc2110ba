"""Local stand-ins for production infrastructure, used by the tests and the demo: a throwaway
PostgreSQL, Prometheus, a test app with adjustable SLOs, the local pod executor.

Never imported by the operator itself (import-linter enforces it).
"""
