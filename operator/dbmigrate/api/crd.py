"""Renders the DatabaseMigration CRD from the pydantic models.

Pydantic's JSON schema is turned into a Kubernetes *structural* OpenAPI v3 schema: `$ref`s are
inlined, `Optional[...]` loses its `null` branch, object defaults are materialised so the API
server fills nested defaults, and the `x-kubernetes-validations` (CEL) rules declared on the
models are carried over. `python -m dbmigrate.api.crd` prints the YAML checked in under crds/.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from dbmigrate.api import models

_KEEP_KEYS = {
    "type",
    "properties",
    "required",
    "items",
    "description",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "additionalProperties",
    "format",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        merged = dict(defs[name])
        merged.update({k: v for k, v in schema.items() if k != "$ref"})
        return _resolve(merged, defs)
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(branches) == 1:
            merged = _resolve(branches[0], defs)
            merged.update(rest)
            return merged
        raise ValueError(f"cannot express a union in a structural schema: {schema}")
    if "allOf" in schema and len(schema["allOf"]) == 1:
        merged = _resolve(schema["allOf"][0], defs)
        merged.update({k: v for k, v in schema.items() if k != "allOf"})
        return merged
    return schema


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    schema = _resolve(schema, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key in _KEEP_KEYS:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if schema.get("x-dbmigrate-format") == "duration":
        out["description"] = (
            out.get("description", "") + " Duration, e.g. 500ms, 30s, 5m."
        ).strip()
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _structural(v, defs) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _structural(out["items"], defs)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(out["additionalProperties"], defs)
    elif out.get("additionalProperties") is False or (
        out.get("additionalProperties") is True and out.get("x-kubernetes-preserve-unknown-fields")
    ):
        # A structural schema says "anything" with x-kubernetes-preserve-unknown-fields only.
        del out["additionalProperties"]
    if "default" in out:
        if out["default"] is None:
            del out["default"]
        else:
            out["default"] = _strip_none(out["default"])
    # JSON Schema 2020 has numeric exclusive bounds; OpenAPI v3.0 has booleans beside min/max.
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[flag] = out[bound]
            out[bound] = True
    if out.get("type") == "number" or (out.get("type") is None and "minimum" in out):
        out["type"] = "number"
    return out


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _without_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Status is written by the operator only; the API server should not invent values in it."""
    schema.pop("default", None)
    for prop in schema.get("properties", {}).values():
        _without_defaults(prop)
    if isinstance(schema.get("items"), dict):
        _without_defaults(schema["items"])
    return schema


def _schema_of(model: type[models.Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _with_object_defaults(schema: dict[str, Any], model: type[models.Model]) -> dict[str, Any]:
    """Give object-typed fields with a default factory `default: {}` so nested defaults apply."""
    for name, field in model.model_fields.items():
        alias = field.alias or name
        prop = schema.get("properties", {}).get(alias)
        if prop is None:
            continue
        if field.default_factory is not None and prop.get("type") == "object":
            prop["default"] = {}
        annotation = field.annotation
        args: tuple[Any, ...] = getattr(annotation, "__args__", (annotation,))
        inner = [a for a in args if a is not type(None)]
        for candidate in inner:
            if isinstance(candidate, type) and issubclass(candidate, models.Model):
                _with_object_defaults(prop, candidate)
            elif getattr(candidate, "__origin__", None) is list:
                (item,) = candidate.__args__
                if isinstance(item, type) and issubclass(item, models.Model):
                    _with_object_defaults(prop["items"], item)
    return schema


def build_crd() -> dict[str, Any]:
    spec_schema = _with_object_defaults(
        _schema_of(models.DatabaseMigrationSpec), models.DatabaseMigrationSpec
    )
    status_schema = _without_defaults(_schema_of(models.DatabaseMigrationStatus))
    # Analysis baselines are keyed by metric name.
    status_schema["properties"]["analysis"]["properties"]["baseline"] = {
        "type": "object",
        "additionalProperties": {"type": "number"},
    }
    status_schema["description"] = "Observed state, written by the operator only."
    spec_schema["description"] = (
        "The desired migration. migrationId, database and steps are immutable; suspend, "
        "rollback and analysis may change while it runs."
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{models.PLURAL}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": ["all", "dbmigrate"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Step", "type": "string", "jsonPath": ".status.currentStep"},
                        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A PostgreSQL schema/data migration carried out "
                            "safely by the dbmigrate operator.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd_yaml() -> str:
    header = "# Generated from the models in operator/dbmigrate/api/ by `make crds`. Do not edit.\n"
    return header + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_crd_yaml())
