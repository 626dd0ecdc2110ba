"""The Helm chart `charts/dbmigrate-operator`, with real helm (built from the Go module proxy by
`hack/lib/build-helm.sh`), the real API server of the e2e cluster and Prometheus' own promtool.

Aspects covered:
- `helm lint` (also `--strict`) is clean for the defaults and each variation; values.schema.json
  rejects bad values;
- the rendered core objects of every variation pass `kubectl apply --dry-run=server`;
  the monitoring objects (no Prometheus Operator CRDs here) are checked for what makes them
  work: the ServiceMonitor selects the metrics Service and its port, the alert rules pass
  `promtool check rules` and fire (or not) on series in `promtool test rules`, the dashboard's
  queries are valid PromQL over the operator's metrics;
- the Deployment: the operator's own CLI parser and settings accept the rendered args and env
  (DBMIGRATE_IMAGE is the chart's image), Recreate unless peering, hardened security context,
  probes on /healthz;
- RBAC as a fact, not a reading of YAML: the chart is installed for real (namespaced and
  cluster-wide), a token is minted for its ServiceAccount, and with a kubeconfig holding only
  that token `kubectl auth can-i` answers yes to every verb the operator needs and no to what it
  must not do.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from dbmigrate import main
from dbmigrate.cli import build_parser
from dbmigrate.settings import DEFAULT_IMAGE, Settings
from dbmigrate_dev.cluster_client import Cluster
from tests.e2e.helpers import (
    CHART,
    CHART_RELEASE,
    CHART_VARIATIONS,
    PEERING_CRDS,
    ROOT,
    container,
    env_of,
    only,
    run_helm,
)
from tests.e2e.helpers import render_chart as render
from tests.e2e.helpers import substitute_namespace as _substitute

# A cold helm build (the first run on a machine without hack/bootstrap.sh) takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

OPERATOR_METRICS = [
    "dbmigrate_migrations",
    "dbmigrate_steps_applied_total",
    "dbmigrate_steps_reverted_total",
    "dbmigrate_step_duration_seconds",
    "dbmigrate_lock_timeout_retries_total",
    "dbmigrate_rollbacks_total",
    "dbmigrate_reconcile_errors_total",
    "dbmigrate_backfill_rows_total",
    "dbmigrate_analysis_measurements_total",
]


def test_peering_identity_is_the_pod_name(helm: str) -> None:
    """kopf names a replica after POD_ID (else after the passwd entry of its uid)."""
    (pod_id,) = [e for e in container(render(helm, {}))["env"] if e["name"] == "POD_ID"]
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool comes with Debian's prometheus package (hack/bootstrap.sh)"
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


# --- lint and schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("values", CHART_VARIATIONS)
def test_helm_lint_is_clean(helm: str, values: dict[str, Any], strict: bool) -> None:
    values = _substitute(values, "team-a")
    proc = run_helm(helm, "lint", str(CHART), *(["--strict"] if strict else []), values=values)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        pytest.param({"replicaCount": "two"}, "/replicaCount", id="replicas-as-string"),
        pytest.param({"replicaCount": -1}, "/replicaCount", id="negative-replicas"),
        pytest.param({"watchNamespaces": "team-a"}, "/watchNamespaces", id="namespaces-not-list"),
        pytest.param({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0", id="bad-namespace"),
        pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="pull-policy"),
        pytest.param({"secrets": {"label": "no value"}}, "/secrets/label", id="secret-label"),
        pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="digest"),
        pytest.param({"replicas": 2}, "replicas", id="unknown-key-typo"),
        pytest.param(
            {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
            "/metrics/serviceMonitor/interval",
            id="duration",
        ),
        pytest.param({"argocd": {"enabled": "yes"}}, "/argocd/enabled", id="bool-as-string"),
        pytest.param(
            {"operator": {"metricsPort": 70000}}, "/operator/metricsPort", id="port-range"
        ),
    ],
)
def test_schema_rejects_bad_values(helm: str, values: dict[str, Any], complaint: str) -> None:
    proc = run_helm(helm, "template", CHART_RELEASE, str(CHART), values=values)
    assert proc.returncode != 0
    assert "don't meet the specifications of the schema" in proc.stderr
    assert complaint in proc.stderr
    lint = run_helm(helm, "lint", "--strict", str(CHART), values=values)
    assert lint.returncode != 0


# --- the API server accepts what the chart renders -----------------------------------------------


def _is_monitoring(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].startswith("monitoring.coreos.com/")


@pytest.mark.parametrize("values", CHART_VARIATIONS)
def test_rendered_objects_pass_server_dry_run(
    helm: str, cluster: Cluster, namespace: str, values: dict[str, Any]
) -> None:
    cluster.install_crds([PEERING_CRDS])
    docs = render(helm, _substitute(values, namespace), namespace=namespace)
    core = [d for d in docs if not _is_monitoring(d)]
    assert core
    proc = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-o",
        "name",
        "-f",
        "-",
        input="---\n".join(yaml.safe_dump(d) for d in core),
    )
    applied = proc.stdout.split()
    assert len(applied) == len(core), proc.stdout
    assert any(name.startswith("deployment.apps/") for name in applied)


# --- the Deployment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "args", "peering", "strategy"),
    [
        pytest.param(
            {},
            ["run", "--all-namespaces", "--liveness-port=8081", "--metrics-port=8080"],
            False,
            "Recreate",
            id="default",
        ),
        pytest.param(
            {"watchNamespaces": ["team-a", "team-b"]},
            [
                "run",
                "--namespace=team-a",
                "--namespace=team-b",
                "--liveness-port=8081",
                "--metrics-port=8080",
            ],
            False,
            "Recreate",
            id="namespaced",
        ),
        pytest.param(
            {"replicaCount": 2},
            ["run", "--all-namespaces", "--liveness-port=8081", "--metrics-port=8080", "--peering"],
            True,
            "RollingUpdate",
            id="replicas-2-peering",
        ),
        pytest.param(
            {"peering": {"enabled": True}},
            ["run", "--all-namespaces", "--liveness-port=8081", "--metrics-port=8080", "--peering"],
            True,
            "RollingUpdate",
            id="peering-asked-for",
        ),
        pytest.param(
            {"operator": {"verbose": True, "livenessPort": 9091, "metricsPort": 9090}},
            ["run", "--all-namespaces", "--liveness-port=9091", "--metrics-port=9090", "--verbose"],
            False,
            "Recreate",
            id="ports-verbose",
        ),
    ],
)
def test_operator_args(
    helm: str, values: dict[str, Any], args: list[str], peering: bool, strategy: str
) -> None:
    docs = render(helm, values)
    c = container(docs)
    assert c["args"] == args
    assert only(docs, "Deployment")["spec"]["strategy"]["type"] == strategy
    # The operator's own CLI accepts them and reads what the chart meant.
    parsed = build_parser().parse_args(c["args"])
    assert parsed.peering is peering
    assert parsed.namespace == values.get("watchNamespaces", [])
    assert parsed.all_namespaces is not bool(values.get("watchNamespaces"))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": parsed.metrics_port, "healthz": parsed.liveness_port}


@pytest.mark.parametrize(
    ("values", "image", "argocd_namespaces", "poll"),
    [
        pytest.param({}, DEFAULT_IMAGE, (), 5.0, id="default-is-the-operator-default-image"),
        pytest.param(
            {"image": {"repository": "registry.example.com/dbmigrate", "tag": "1.2.3"}},
            "registry.example.com/dbmigrate:1.2.3",
            (),
            5.0,
            id="tag",
        ),
        pytest.param(
            {"image": {"digest": "sha256:" + "0f" * 32, "tag": "ignored"}},
            "ghcr.io/dbmigrate/dbmigrate@sha256:" + "0f" * 32,
            (),
            5.0,
            id="digest-wins",
        ),
        pytest.param(
            {"argocd": {"enabled": True, "namespaces": ["argocd", "gitops"]}},
            DEFAULT_IMAGE,
            ("argocd", "gitops"),
            5.0,
            id="argocd",
        ),
        pytest.param(
            {
                "argocd": {"enabled": False, "namespaces": ["gitops"]},
                "operator": {"pollInterval": 2.5},
            },
            DEFAULT_IMAGE,
            (),
            2.5,
            id="argocd-off-poll",
        ),
    ],
)
def test_operator_settings_from_rendered_env(
    helm: str,
    values: dict[str, Any],
    image: str,
    argocd_namespaces: tuple[str, ...],
    poll: float,
) -> None:
    c = container(render(helm, values))
    assert c["image"] == image
    settings = Settings.from_env(env_of(c))
    assert settings.image == image, "backfill Jobs run the chart's own image"
    assert settings.argocd_namespaces == argocd_namespaces
    assert settings.poll_interval == poll
    assert settings.peering_name == "dbmigrate"


@pytest.mark.parametrize(
    ("values", "label"),
    [
        pytest.param({}, None, id="default-any-secret"),
        pytest.param({"secrets": {"requireLabel": True}}, ("dbmigrate.io/dsn", "true"), id="on"),
        pytest.param(
            {"secrets": {"requireLabel": True, "label": "example.com/db=migrations"}},
            ("example.com/db", "migrations"),
            id="own-label",
        ),
        pytest.param(
            {"secrets": {"requireLabel": False, "label": "example.com/db=x"}}, None, id="off"
        ),
    ],
)
def test_secret_label_mode_reaches_the_operator(
    helm: str, values: dict[str, Any], label: tuple[str, str] | None
) -> None:
    settings = Settings.from_env(env_of(container(render(helm, values))))
    assert settings.secret_label == label


@pytest.mark.parametrize(
    ("values", "timeouts"),
    [
        pytest.param({}, (300, 60.0), id="defaults"),
        pytest.param(
            {"operator": {"kopf": {"watchTimeout": 50, "requestTimeout": 20}}},
            (50, 20.0),
            id="behind-a-proxy",
        ),
    ],
)
def test_kopf_timeouts_reach_kopf(
    helm: str, values: dict[str, Any], timeouts: tuple[int, float]
) -> None:
    settings = Settings.from_env(env_of(container(render(helm, values))))
    assert (settings.watch_timeout, settings.request_timeout) == timeouts
    kopf_settings = kopf.OperatorSettings()
    main.configure(kopf_settings, peering=False, ours=settings)
    assert kopf_settings.watching.server_timeout == timeouts[0]
    assert kopf_settings.networking.request_timeout == timeouts[1]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("pod.runAsNonRoot", True, id="pod-non-root"),
        pytest.param("pod.runAsUser", 65532, id="pod-uid-matches-image"),
        pytest.param("pod.seccompProfile.type", "RuntimeDefault", id="seccomp"),
        pytest.param("container.allowPrivilegeEscalation", False, id="no-escalation"),
        pytest.param("container.readOnlyRootFilesystem", True, id="read-only-root"),
        pytest.param("container.capabilities.drop", ["ALL"], id="no-capabilities"),
        pytest.param("container.privileged", False, id="not-privileged"),
    ],
)
def test_security_context_is_hardened(helm: str, path: str, expected: Any) -> None:
    docs = render(helm, {})
    pod_spec = only(docs, "Deployment")["spec"]["template"]["spec"]
    scope, _, keys = path.partition(".")
    value: Any = (
        pod_spec["securityContext"] if scope == "pod" else container(docs)["securityContext"]
    )
    for key in keys.split("."):
        value = value[key]
    assert value == expected


def test_image_user_matches_pod_security_context(helm: str) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+)", dockerfile, re.M)
    pod = only(render(helm, {}), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(user)


def test_probes_and_scratch_space(helm: str) -> None:
    docs = render(helm, {})
    c = container(docs)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = c["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    assert "emptyDir" in volumes[mount["name"]], "the only writable path is an emptyDir"


# --- monitoring ----------------------------------------------------------------------------------

MONITORING = {
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "grafanaDashboard": {"enabled": True},
}


def test_service_monitor_scrapes_the_operator(helm: str) -> None:
    docs = render(helm, MONITORING)
    monitor = only(docs, "ServiceMonitor")
    service = only(docs, "Service")
    pod = only(docs, "Deployment")["spec"]["template"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (c,) = pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in c["ports"]}
    assert f"--metrics-port={c['ports'][0]['containerPort']}" in c["args"]


def test_service_monitor_needs_the_service(helm: str) -> None:
    proc = run_helm(
        helm,
        "template",
        CHART_RELEASE,
        str(CHART),
        values={"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
    )
    assert proc.returncode != 0
    assert "needs metrics.service.enabled" in proc.stderr


def _rule_groups(helm: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rule = only(render(helm, values or MONITORING), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return rule["spec"]["groups"]


def test_alert_rules_pass_promtool(helm: str, tmp_path: Path) -> None:
    groups = _rule_groups(helm)
    alerts = {r["alert"] for g in groups for r in g["rules"]}
    assert {
        "DbmigrateMigrationFailed",
        "DbmigrateMigrationStalled",
        "DbmigrateRolledBack",
        "DbmigrateBackfillSlow",
    } <= alerts
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    proc = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in proc.stdout


def test_additional_rules_are_appended(helm: str) -> None:
    extra = {"alert": "MyOwn", "expr": "vector(1) > 0", "labels": {"severity": "info"}}
    values = {"metrics": {"prometheusRule": {"enabled": True, "additionalRules": [extra]}}}
    (group,) = _rule_groups(helm, values)
    assert group["rules"][-1] == extra


# Per minute: a backfill doing 100 rows/s adds 6000 rows, one doing 2000 rows/s adds 120000.
ALERT_CASES = [
    pytest.param(
        [('dbmigrate_migrations{namespace="shop",phase="Failed"}', "1x40")],
        "DbmigrateMigrationFailed",
        "16m",
        [{"namespace": "shop", "severity": "critical"}],
        id="failed-for-15m-fires",
    ),
    pytest.param(
        [('dbmigrate_migrations{namespace="shop",phase="Failed"}', "1x40")],
        "DbmigrateMigrationFailed",
        "10m",
        [],
        id="failed-for-10m-pending",
    ),
    pytest.param(
        [('dbmigrate_migrations{namespace="shop",phase="Failed"}', "1x10 0x30")],
        "DbmigrateMigrationFailed",
        "30m",
        [],
        id="failed-then-rolled-back-by-hand",
    ),
    pytest.param(
        [('dbmigrate_migrations{namespace="shop",phase="Succeeded"}', "1x40")],
        "DbmigrateMigrationFailed",
        "30m",
        [],
        id="succeeded-is-quiet",
    ),
    pytest.param(
        [('dbmigrate_migrations{namespace="shop",phase="Waiting"}', "1x90")],
        "DbmigrateMigrationStalled",
        "70m",
        [{"namespace": "shop", "phase": "Waiting", "severity": "warning"}],
        id="waiting-for-an-hour-fires",
    ),
    pytest.param(
        [('dbmigrate_migrations{namespace="shop",phase="Progressing"}', "1x90")],
        "DbmigrateMigrationStalled",
        "70m",
        [],
        id="progressing-for-an-hour-is-fine",
    ),
    pytest.param(
        [
            (
                'dbmigrate_rollbacks_total{reason="SloBreached"}',
                "0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            )
        ],
        "DbmigrateRolledBack",
        "8m",
        [{"reason": "SloBreached", "severity": "warning"}],
        id="rollback-fires",
    ),
    pytest.param(
        [
            (
                'dbmigrate_rollbacks_total{reason="SloBreached"}',
                "0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            )
        ],
        "DbmigrateRolledBack",
        "19m",
        [],
        id="rollback-alert-clears",
    ),
    pytest.param(
        [("dbmigrate_backfill_rows_total", "0+6000x60")],
        "DbmigrateBackfillSlow",
        "30m",
        [{"severity": "warning"}],
        id="slow-backfill-fires",
    ),
    pytest.param(
        [("dbmigrate_backfill_rows_total", "0+120000x60")],
        "DbmigrateBackfillSlow",
        "30m",
        [],
        id="fast-backfill-is-quiet",
    ),
    pytest.param(
        [("dbmigrate_backfill_rows_total", "5000x60")],
        "DbmigrateBackfillSlow",
        "30m",
        [],
        id="no-backfill-running-is-quiet",
    ),
    pytest.param(
        [("dbmigrate_reconcile_errors_total", "0+1x60")],
        "DbmigrateReconcileErrors",
        "40m",
        [{"severity": "warning"}],
        id="reconcile-errors-fire",
    ),
]


@pytest.mark.parametrize(("series", "alert", "at", "expected"), ALERT_CASES)
def test_alerts_fire_on_series(
    helm: str,
    tmp_path: Path,
    series: list[tuple[str, str]],
    alert: str,
    at: str,
    expected: list[dict[str, str]],
) -> None:
    groups = _rule_groups(helm)
    # promtool compares annotations exactly; the firing logic is what is tested here (the
    # annotations' templates are checked by `promtool check rules`).
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": labels} for labels in expected],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    proc = run_promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def _dashboard(helm: str) -> dict[str, Any]:
    cm = next(d for d in render(helm, MONITORING) if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    return json.loads(cm["data"]["dbmigrate.json"])


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$namespace": ".*"}


def _grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown dashboard variable in {expr}"
    return expr


def test_dashboard_covers_every_operator_metric(helm: str) -> None:
    dashboard = _dashboard(helm)
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in OPERATOR_METRICS:
        assert re.search(rf"\b{metric}(_bucket)?\b", exprs), f"no panel shows {metric}"
    names = set(re.findall(r"\bdbmigrate_[a-z_]+", exprs))
    known = set(OPERATOR_METRICS) | {f"{m}_bucket" for m in OPERATOR_METRICS}
    assert names <= known, f"panels query metrics the operator does not export: {names - known}"


def test_dashboard_is_well_formed(helm: str) -> None:
    dashboard = _dashboard(helm)
    assert dashboard["uid"] == "dbmigrate-operator"
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace"}
    cells = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"]
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        cells |= area


def test_dashboard_queries_are_valid_promql(helm: str, tmp_path: Path) -> None:
    rules = [
        {
            "record": f"dashboard:panel_{p['id']}_{t['refId'].lower()}",
            "expr": _grafana_to_promql(t["expr"]),
        }
        for p in _dashboard(helm)["panels"]
        for t in p["targets"]
    ]
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    proc = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_dashboard_namespace_override(helm: str) -> None:
    values = {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}
    cm = only(render(helm, values), "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
