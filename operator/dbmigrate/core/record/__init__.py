"""The migration's record (seed Steps 5.3 and 6.3): the facts gathered from the final status
(`facts`), the Markdown written from them (`markdown`), and the ConfigMap that carries it
(`configmap`). Pure: `reconcile.record` writes it to `dbmigrate.runs` and the cluster."""

from __future__ import annotations

from dbmigrate.core.record.configmap import (
    CONFIG_MAP_KEY,
    build_report_config_map,
    fit_report,
    report_config_map_name,
)
from dbmigrate.core.record.facts import (
    MetricFacts,
    Outcome,
    RecordFacts,
    StepFacts,
    gather_facts,
    run_steps,
)
from dbmigrate.core.record.markdown import render_record, rollback_availability

__all__ = [
    "CONFIG_MAP_KEY",
    "MetricFacts",
    "Outcome",
    "RecordFacts",
    "StepFacts",
    "build_report_config_map",
    "fit_report",
    "gather_facts",
    "render_record",
    "report_config_map_name",
    "rollback_availability",
    "run_steps",
]
