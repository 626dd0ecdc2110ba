"""dbmigrate: a Kubernetes operator that makes PostgreSQL migrations safe to run in production."""

__version__ = "0.1.0"
