# The two commands of this project (README.md): `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help:
	@echo "make demo   install everything, start a local cluster + PostgreSQL + Prometheus + operator, run the seed's migration"
	@echo "make test   install everything, start what the tests need, run lint + unit + integration + e2e tests"

bootstrap:
	hack/bootstrap.sh

test:
	hack/test.sh

demo:
	hack/demo.sh

lint: bootstrap
	hack/static-checks.sh

crds: bootstrap
	.venv/bin/python -m dbmigrate.api.crd > crds/dbmigrate.io_databasemigrations.yaml
	cp crds/dbmigrate.io_databasemigrations.yaml crds/kopf-peering.yaml charts/dbmigrate-operator/crds/

docs: bootstrap
	.venv/bin/python hack/update-readme.py

.PHONY: help bootstrap test demo lint crds docs
