"""DatabaseMigration manifests as the CLI reads them: multi-document YAML text in, validated
resources out, with where each step's SQL sits in the file (so findings get file line numbers)
and the ConfigMaps found alongside (so `upFrom`/`downFrom` SQL can be linted and planned).

Pure: parses text the caller has read. Documents of other kinds are ignored, except ConfigMaps,
which are kept for resolving SQL references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from dbmigrate.api.models import GROUP, KIND, DatabaseMigration
from dbmigrate.core.lint.context import Direction
from dbmigrate.core.lint.findings import (
    Resolved,
)


class ManifestError(ValueError):
    """The file cannot be used: bad YAML or an invalid DatabaseMigration."""


@dataclass(frozen=True)
class MigrationDocument:
    number: int  # 1-based position in the file
    resource: DatabaseMigration
    # step name -> 1-based line of the step's entry in the file
    step_lines: dict[str, int] = field(default_factory=dict)
    # (step name, direction) -> 1-based file line of the SQL's first line
    sql_lines: dict[tuple[str, Direction], int] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        name = self.resource.metadata.get("name")
        return str(name) if name is not None else None

    @property
    def namespace(self) -> str | None:
        ns = self.resource.metadata.get("namespace")
        return str(ns) if ns is not None else None


@dataclass(frozen=True)
class ConfigMapDocument:
    name: str
    namespace: str | None
    data: dict[str, str]
    key_lines: dict[str, int] = field(default_factory=dict)


def _scalar_first_line(node: Any) -> int:
    """1-based line where a scalar's text starts (block scalars start after their header)."""
    line = int(node.start_mark.line) + 1
    return line + 1 if getattr(node, "style", None) in ("|", ">") else line


def _mapping_get(node: Any, key: str) -> Any:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _format_loc(loc: tuple[int | str, ...], doc: dict[str, Any]) -> str:
    out = ""
    steps = (doc.get("spec") or {}).get("steps") if isinstance(doc.get("spec"), dict) else None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            if i > 0 and loc[i - 1] == "steps" and isinstance(steps, list) and part < len(steps):
                step = steps[part]
                if isinstance(step, dict) and step.get("name"):
                    out += f" ({step['name']})"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_manifests(text: str) -> tuple[list[MigrationDocument], list[ConfigMapDocument]]:
    """The DatabaseMigrations and ConfigMaps in a (multi-document) YAML text."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        constructor = yaml.SafeLoader("")
        data = [constructor.construct_document(n) if n is not None else None for n in nodes]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"invalid YAML{where}: {problem}") from exc
    migrations: list[MigrationDocument] = []
    configmaps: list[ConfigMapDocument] = []
    for number, (doc, node) in enumerate(zip(data, nodes, strict=True), start=1):
        if not isinstance(doc, dict):
            continue
        kind = doc.get("kind")
        api_version = str(doc.get("apiVersion", ""))
        if kind == "ConfigMap":
            configmaps.append(_configmap(doc, node))
        elif kind == KIND and (not api_version or api_version.startswith(f"{GROUP}/")):
            migrations.append(_migration(number, doc, node))
    return migrations, configmaps


def _configmap(doc: dict[str, Any], node: Any) -> ConfigMapDocument:
    meta = doc.get("metadata") or {}
    raw = doc.get("data") or {}
    data = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    lines: dict[str, int] = {}
    data_node = _mapping_get(node, "data")
    if isinstance(data_node, yaml.MappingNode):
        for k, v in data_node.value:
            if isinstance(v, yaml.ScalarNode):
                lines[str(k.value)] = _scalar_first_line(v)
    return ConfigMapDocument(
        name=str(meta.get("name", "")),
        namespace=str(meta["namespace"]) if meta.get("namespace") else None,
        data=data,
        key_lines=lines,
    )


def _migration(number: int, doc: dict[str, Any], node: Any) -> MigrationDocument:
    try:
        resource = DatabaseMigration.model_validate(doc)
    except ValidationError as exc:
        name = (doc.get("metadata") or {}).get("name")
        label = f"DatabaseMigration {name}" if name else f"document {number}"
        problems = "; ".join(
            f"{_format_loc(tuple(err['loc']), doc)}: {err['msg']}" for err in exc.errors()
        )
        raise ManifestError(f"{label} is invalid: {problems}") from exc
    step_lines: dict[str, int] = {}
    sql_lines: dict[tuple[str, Direction], int] = {}
    steps_node = _mapping_get(_mapping_get(node, "spec"), "steps")
    if isinstance(steps_node, yaml.SequenceNode):
        for step, step_node in zip(resource.spec.steps, steps_node.value, strict=False):
            step_lines[step.name] = int(step_node.start_mark.line) + 1
            sql_node = _mapping_get(step_node, "sql")
            for key, direction in (("up", "up"), ("down", "down")):
                scalar = _mapping_get(sql_node, key)
                if isinstance(scalar, yaml.ScalarNode):
                    sql_lines[(step.name, direction)] = _scalar_first_line(scalar)  # type: ignore[index]
    return MigrationDocument(number, resource, step_lines, sql_lines)


def resolve_sql(
    migration: MigrationDocument, configmaps: list[ConfigMapDocument]
) -> tuple[Resolved, dict[tuple[str, Direction], tuple[ConfigMapDocument, str]]]:
    """SQL for `upFrom`/`downFrom` references found in the given ConfigMaps (same namespace,
    or a ConfigMap without one), and which ConfigMap key each came from."""
    resolved: Resolved = {}
    origins: dict[tuple[str, Direction], tuple[ConfigMapDocument, str]] = {}
    for step in migration.resource.spec.steps:
        if step.sql is None:
            continue
        found: dict[Direction, str | None] = {"up": None, "down": None}
        refs: tuple[tuple[Direction, Any], ...] = (
            ("up", step.sql.up_from),
            ("down", step.sql.down_from),
        )
        for direction, source in refs:
            if source is None:
                continue
            ref = source.config_map_key_ref
            for cm in configmaps:
                if cm.name != ref.name or ref.key not in cm.data:
                    continue
                if cm.namespace and migration.namespace and cm.namespace != migration.namespace:
                    continue
                found[direction] = cm.data[ref.key]
                origins[(step.name, direction)] = (cm, ref.key)
                break
        if found["up"] is not None or found["down"] is not None:
            resolved[step.name] = (found["up"], found["down"])
    return resolved, origins
