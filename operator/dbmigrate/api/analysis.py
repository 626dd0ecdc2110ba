"""SLO analysis (`spec.analysis`): the metrics measured while the migration is under way, in
Prometheus (`query`) or in the migration's database (`sql`), and their thresholds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from dbmigrate.api.schema import DNS_LABEL, Duration, Model, cel_rules


class PrometheusRef(Model):
    address: Annotated[
        str,
        Field(pattern=r"^https?://.+", max_length=2048, description="Prometheus HTTP API URL."),
    ]


class Metric(Model):
    """One measurement and its thresholds: a PromQL query, or SQL in the target database."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            {
                "rule": "has(self.max) || has(self.min) || has(self.maxRatioToBaseline)",
                "message": "each analysis metric needs at least one of max, min, "
                "maxRatioToBaseline",
            },
            {
                "rule": "has(self.query) != has(self.sql)",
                "message": "each analysis metric needs exactly one of query (PromQL) and sql",
            },
        )
    )

    name: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]
    query: Annotated[
        str | None,
        Field(default=None, min_length=1, description="PromQL instant query (needs prometheus)."),
    ]
    sql: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=10000,
            description="One read-only SQL statement returning one row with one number, run in "
            "the migration's database on a read-only session of its own (statement_timeout "
            "5s). NULL, no row or an error is Inconclusive.",
        ),
    ]
    max: Annotated[float | None, Field(default=None, description="Fail when value > max.")]
    min: Annotated[float | None, Field(default=None, description="Fail when value < min.")]
    max_ratio_to_baseline: Annotated[
        float | None,
        Field(
            default=None,
            gt=0,
            description="Fail when value > ratio x baseline. A query's baseline is the query "
            "averaged over baselineWindow ending when the migration started; an sql metric has "
            "no history, so its baseline is its value measured when the migration started, "
            "before the first step.",
        ),
    ]

    @model_validator(mode="after")
    def _one_source(self) -> Metric:
        if (self.query is None) == (self.sql is None):
            raise ValueError(
                f"analysis metric {self.name!r} needs exactly one of query (PromQL) and sql"
            )
        return self


class Analysis(Model):
    """SLO analysis while the migration is active (Prometheus, or the database itself)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            {
                "rule": "self.metrics.all(m, self.metrics.filter(n, n.name == m.name).size() == 1)",
                "message": "analysis metric names must be unique",
            },
            {
                "rule": "has(self.prometheus) || !self.metrics.exists(m, has(m.query))",
                "message": "analysis.prometheus is required when a metric has a query (PromQL)",
                "fieldPath": ".prometheus",
            },
        )
    )

    prometheus: Annotated[
        PrometheusRef | None,
        Field(default=None, description="Required when a metric has a query (PromQL)."),
    ]
    interval: Annotated[Duration, Field(default="30s")]
    failure_limit: Annotated[
        int,
        Field(
            default=2, ge=1, description="Consecutive failed measurements that trigger rollback."
        ),
    ]
    inconclusive_limit: Annotated[
        int,
        Field(
            default=3,
            ge=1,
            description="Consecutive empty/NaN/error results before onInconclusive applies.",
        ),
    ]
    on_inconclusive: Annotated[Literal["Pause", "Rollback", "Ignore"], Field(default="Pause")]
    baseline_window: Annotated[Duration, Field(default="10m")]
    settle: Annotated[
        Duration,
        Field(default="5m", description="Keep analysing after the last step before Succeeded."),
    ]
    metrics: Annotated[list[Metric], Field(min_length=1, max_length=20)]

    @model_validator(mode="after")
    def _prometheus_for_queries(self) -> Analysis:
        if self.prometheus is None and any(m.query is not None for m in self.metrics):
            raise ValueError("analysis.prometheus is required when a metric has a query (PromQL)")
        return self
