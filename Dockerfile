# The dbmigrate image: the operator (`dbmigrate run`) and the workers its Jobs run
# (`dbmigrate backfill`, `dbmigrate backup`). Build: docker build -t dbmigrate:0.1.0 .
#
# Runs as a non-root user (65532) on a read-only root filesystem: nothing is written outside
# /tmp at run time (bytecode is compiled at build time, PYTHONDONTWRITEBYTECODE stops the rest).

ARG PYTHON_VERSION=3.11.13
# The tag's multi-platform index digest: a pull gets exactly this image, not whatever the tag
# points at on the day (the tag is rebuilt when Debian updates).
ARG BASE_DIGEST=sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
# The base of every stage; override it to build FROM a mirror (or the stand-in that
# hack/lib/python-base-image.sh makes from Debian packages on a machine without a registry).
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm@${BASE_DIGEST}

# --- stage 1: the dependencies' wheels; rebuilt only when the locks change -----------------------
FROM ${BASE_IMAGE} AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY requirements.lock requirements-build.lock ./
# The locked runtime dependencies as wheels, each file checked against its hash, and the locked
# build backend for stage 2 (which then builds offline): a rebuild of the same commit gets the
# same packages (hack/lock.sh). A CA bundle passed as the optional build secret `ca-bundle`
# (behind a TLS-inspecting proxy: `--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`)
# is trusted for these downloads only; it never lands in a layer.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements.lock \
    && pip install --require-hashes --no-deps -r requirements-build.lock

# --- stage 2: the project's wheel (offline, against stage 1's build backend) --------------------
FROM deps AS build

COPY pyproject.toml README.md ./
COPY operator/dbmigrate ./operator/dbmigrate
RUN pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /dist .

# --- stage 3: the PostgreSQL client tools, whose binaries stage 4 takes (without the Perl of
# Debian's postgresql-client-common wrappers) ----------------------------------------------------
FROM ${BASE_IMAGE} AS pgclient
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15

# --- stage 4: the runtime image ----------------------------------------------------------------
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    TMPDIR=/tmp

# The PostgreSQL client tools of the backup Job (pg_dump, pg_restore, from stage 3): Debian
# bookworm's 15, with libpq. pg_dump cannot dump a server of a newer major version; the backup
# worker compares the versions first and refuses with "server N is newer than pg_dump 15 in this
# image". apt's lists and caches are not kept.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
RUN --mount=type=bind,from=pgclient,source=/usr/lib/postgresql/15/bin,target=/pgclient \
    cp /pgclient/pg_dump /pgclient/pg_restore /usr/local/bin/ \
    && pg_dump --version && pg_restore --version

# Only wheels, never the build tree, installed offline: first the dependencies (a layer that
# survives changes to our code), then the project. The user has a passwd entry: kopf names the
# operator after it (getpass) when POD_ID is unset.
RUN --mount=type=bind,from=deps,source=/wheels,target=/wheels \
    pip install --no-index /wheels/*.whl \
    && groupadd --system --gid 65532 dbmigrate \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin dbmigrate
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-index --no-deps /dist/dbmigrate-*.whl \
    && pip check \
    && dbmigrate --version

USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus /metrics; 8081: /healthz (liveness and readiness).
EXPOSE 8080 8081

ENTRYPOINT ["dbmigrate"]
CMD ["run", "--all-namespaces"]

# Last, so that a new revision or date does not invalidate the layers above.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="dbmigrate" \
      org.opencontainers.image.description="Kubernetes operator that runs PostgreSQL schema and data migrations safely" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/dbmigrate/dbmigrate" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
