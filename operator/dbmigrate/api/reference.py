"""The spec reference table in README.md, rendered from the same models as the CRD.

`python -m dbmigrate.api.reference` prints it; tests/unit/test_readme.py checks the README's
copy (between the `api-reference` markers) is current.
"""

from __future__ import annotations

import sys
from typing import Any

from dbmigrate.api.crd import build_crd


def _type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if prop.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = prop.get("type", "object")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if "Duration" in prop.get("description", ""):
        return "duration"
    return str(kind)


def _rows(prop: dict[str, Any], path: str, required: bool) -> list[str]:
    rows = []
    description = " ".join(prop.get("description", "").split()).replace("|", "\\|")
    default = prop.get("default")
    default_text = (
        ""
        if default in (None, {})
        else f"`{default}`".replace("True", "true").replace("False", "false")
    )
    if not default_text and required:
        default_text = "required"
    rows.append(f"| `{path}` | {_type(prop)} | {default_text} | {description} |")
    children = prop.get("properties") or prop.get("items", {}).get("properties")
    if children:
        needed = set(prop.get("required") or prop.get("items", {}).get("required") or [])
        suffix = "[]" if prop.get("type") == "array" else ""
        for name, child in children.items():
            rows.extend(_rows(child, f"{path}{suffix}.{name}", name in needed))
    return rows


def render_reference() -> str:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    needed = set(spec.get("required", []))
    for name, prop in spec["properties"].items():
        lines.extend(_rows(prop, f"spec.{name}", name in needed))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_reference())
