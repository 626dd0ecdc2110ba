"""How `dbmigrate lint` prints its findings: text (rich colours on a terminal, plain text
otherwise, so that a pre-commit hook or a pipe does not pay for rich), JSON, GitHub Actions
workflow commands (annotations on the lines), and SARIF 2.1.0 (GitHub code scanning and other
SARIF viewers)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbmigrate import __version__
from dbmigrate.core.lint import RULES, Finding

FORMATS = ("text", "json", "github", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/dbmigrate/dbmigrate"


@dataclass(frozen=True)
class Located:
    """A finding and where it is in the files given on the command line."""

    file: str
    line: int | None
    finding: Finding


def print_findings(located: list[Located], output: str, files: int) -> None:
    if output == "json":
        _print_json(located)
    elif output == "github":
        _print_github(located)
    elif output == "sarif":
        sys.stdout.write(json.dumps(sarif(located), indent=2, ensure_ascii=False) + "\n")
    else:
        _print_text(located, files)


def _counts(located: list[Located]) -> tuple[int, int, int]:
    errors = sum(1 for x in located if x.finding.blocking)
    warnings = sum(
        1 for x in located if x.finding.severity == "warning" and not x.finding.suppressed
    )
    suppressed = sum(1 for x in located if x.finding.suppressed)
    return errors, warnings, suppressed


def _headline(item: Located) -> tuple[str, str, str]:
    """(where, severity label, context) of a finding's first line."""
    f = item.finding
    where = item.file + (f":{item.line}" if item.line is not None else "")
    label = "suppressed " + f.severity if f.suppressed else f.severity
    parts = (f"step {f.step}" if f.step else "", "down SQL" if f.direction == "down" else "")
    return where, label, ", ".join(x for x in parts if x)


def _print_text(located: list[Located], files: int) -> None:
    errors, warnings, suppressed = _counts(located)
    noun = "file" if files == 1 else "files"
    summary = f"{files} {noun}: {errors} error(s), {warnings} warning(s)"
    if suppressed:
        summary += f", {suppressed} suppressed"
    if not located:
        summary = f"{files} {noun}: no findings"
    if sys.stdout.isatty():
        _print_rich(located, summary, errors > 0)
        return
    for item in located:
        f = item.finding
        where, label, context = _headline(item)
        print(f"{where}: {label} {f.rule}" + (f" ({context})" if context else ""))
        print(f"    {f.message}")
        if f.suppressed:
            print(f"    reason: {f.reason or 'none given'}")
    print(summary)


def _print_rich(located: list[Located], summary: str, errors: bool) -> None:
    # Imported here: only a terminal needs rich (start-up time).
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    styles = {"error": "bold red", "warning": "yellow", "info": "cyan"}
    for item in located:
        f = item.finding
        where, label, context = _headline(item)
        style = "dim" if f.suppressed else styles[f.severity]
        console.print(
            f"{escape(where)}: [{style}]{label}[/] [bold]{escape(f.rule)}[/]"
            + (f" ({escape(context)})" if context else "")
        )
        console.print(f"    {escape(f.message)}", style="dim" if f.suppressed else None)
        if f.suppressed:
            console.print(f"    reason: {escape(f.reason or 'none given')}", style="dim")
    if not located:
        console.print(summary.replace("no findings", "[green]no findings[/]"))
        return
    console.print(summary, style="bold red" if errors else None)


def _print_json(located: list[Located]) -> None:
    errors, warnings, suppressed = _counts(located)
    payload = {
        "findings": [
            {
                "file": x.file,
                "line": x.line,
                "step": x.finding.step,
                "direction": x.finding.direction,
                "statement": x.finding.statement,
                "rule": x.finding.rule,
                "severity": x.finding.severity,
                "message": x.finding.message,
                "suppressed": x.finding.suppressed,
                "reason": x.finding.reason,
            }
            for x in located
        ],
        "errors": errors,
        "warnings": warnings,
        "suppressed": suppressed,
    }
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


# --- GitHub Actions workflow commands ------------------------------------------------------------
# https://docs.github.com/en/actions/reference/workflow-commands-for-github-actions:
# `::error file={name},line={line},title={title}::{message}`; data escapes %, CR and LF,
# property values also : and ,. Levels: error, warning, notice.

_GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _print_github(located: list[Located]) -> None:
    for x in located:
        f = x.finding
        command = "notice" if f.suppressed else _GITHUB_LEVEL[f.severity]
        props = [f"file={_escape_property(x.file)}"]
        if x.line is not None:
            props.append(f"line={x.line}")
        title = f"dbmigrate {f.rule}" + (f" (step {f.step})" if f.step else "")
        props.append(f"title={_escape_property(title)}")
        message = f.message
        if f.direction == "down":
            message = f"down SQL: {message}"
        if f.suppressed:
            message += f" (suppressed: {f.reason or 'no reason given'})"
        sys.stdout.write(f"::{command} {','.join(props)}::{_escape_data(message)}\n")
    errors, warnings, suppressed = _counts(located)
    sys.stdout.write(
        f"dbmigrate lint: {errors} error(s), {warnings} warning(s), {suppressed} suppressed\n"
    )


# --- SARIF 2.1.0 ---------------------------------------------------------------------------------

_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _uri(file: str) -> str:
    """A relative path as a URI reference (forward slashes), an absolute one as file://."""
    path = Path(file)
    return path.as_uri() if path.is_absolute() else path.as_posix()


def sarif(located: list[Located]) -> dict[str, Any]:
    """One run of the `dbmigrate` tool: every rule of the registry (so a viewer can show a
    rule's summary), and a result per finding; a suppressed finding carries an in-source
    suppression with its reason, as code scanning expects."""
    rule_index = {rule_id: i for i, rule_id in enumerate(RULES)}
    rules = [
        {
            "id": rule.id,
            "name": rule.id,
            "shortDescription": {"text": rule.summary},
            "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
        }
        for rule in RULES.values()
    ]
    results = []
    for x in located:
        f = x.finding
        region = {"startLine": x.line} if x.line is not None else {}
        location: dict[str, Any] = {"artifactLocation": {"uri": _uri(x.file)}}
        if region:
            location["region"] = region
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": rule_index[f.rule],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": (f"down SQL: {f.message}" if f.direction == "down" else f.message)},
            "locations": [{"physicalLocation": location}],
        }
        if f.step:
            result["properties"] = {"step": f.step, "direction": f.direction}
        if f.suppressed:
            result["suppressions"] = [
                {"kind": "inSource", "justification": f.reason or "no reason given"}
            ]
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dbmigrate",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
