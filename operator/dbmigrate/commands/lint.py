"""`dbmigrate lint FILE…`: lint migration SQL files and DatabaseMigration manifests.

Inputs: `.sql` files (the seed's `{timestamp}_{description}.{up|down}.sql` naming: a `.down.sql`
file is linted as rollback SQL, after its `.up.sql` when both are given, so it knows what the
up created) and `.yaml`/`.yml` files with DatabaseMigration documents (several per file allowed;
ConfigMaps in the given files resolve `upFrom`/`downFrom`; other kinds are ignored).

Output `--format text` (rich; colour only on a terminal), `json`, or `github` (workflow
commands that GitHub Actions shows as annotations on the lines). Exit status: 0 no error
findings, 1 error findings, 2 usage error (missing file, bad YAML, invalid DatabaseMigration).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from dbmigrate.core.lint import (
    DEFAULT_SERVER_VERSION,
    Finding,
    LintContext,
    analyse_migration,
    check_sql,
)
from dbmigrate.core.lint.context import Direction
from dbmigrate.core.lint.documents import (
    ConfigMapDocument,
    ManifestError,
    MigrationDocument,
    parse_manifests,
    resolve_sql,
)

FORMATS = ("text", "json", "github")
SQL_SUFFIXES = (".sql",)
YAML_SUFFIXES = (".yaml", ".yml")


class UsageError(Exception):
    """Input the linter cannot work with (exit status 2)."""


@dataclass(frozen=True)
class Located:
    """A finding and where it is in the files given on the command line."""

    file: str
    line: int | None
    finding: Finding


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lint",
        help="lint migration SQL files or DatabaseMigration YAML",
        description=(
            "Check migration SQL for statements that block reads or writes, rewrite tables, "
            "or break the running application; exit 1 on error findings."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".sql, .yaml or .yml files")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format")
    p.add_argument(
        "--server-version",
        type=int,
        default=DEFAULT_SERVER_VERSION,
        metavar="MAJOR",
        help=f"PostgreSQL major version the SQL will run on (default {DEFAULT_SERVER_VERSION})",
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    try:
        located = lint_files([Path(f) for f in args.files], args.server_version)
    except UsageError as exc:
        print(f"dbmigrate lint: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        _print_json(located)
    elif args.format == "github":
        _print_github(located)
    else:
        _print_text(located, len(args.files))
    return 1 if any(item.finding.blocking for item in located) else 0


# ---------------------------------------------------------------------------------------------
# reading and linting


def _read(path: Path) -> str:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc


def _sql_stem(path: Path) -> tuple[str, str]:
    """(stem shared by an up/down pair, direction)."""
    name = path.name
    for direction in ("up", "down"):
        suffix = f".{direction}.sql"
        if name.endswith(suffix):
            return str(path.parent / name[: -len(suffix)]), direction
    return str(path), "up"


def lint_files(paths: list[Path], server_version: int = DEFAULT_SERVER_VERSION) -> list[Located]:
    """Findings of every file, in the order given (a down file after its up file)."""
    texts: dict[Path, str] = {}
    for path in paths:
        if path.suffix not in SQL_SUFFIXES + YAML_SUFFIXES:
            raise UsageError(f"{path}: not a .sql, .yaml or .yml file")
        texts[path] = _read(path)

    manifests: dict[Path, tuple[list[MigrationDocument], list[ConfigMapDocument]]] = {}
    for path, text in texts.items():
        if path.suffix in YAML_SUFFIXES:
            try:
                manifests[path] = parse_manifests(text)
            except ManifestError as exc:
                raise UsageError(f"{path}: {exc}") from exc
    all_configmaps = [cm for _, cms in manifests.values() for cm in cms]
    # A ConfigMap may come from another file than the migration that uses it.
    configmap_files = {id(cm): path for path, (_, cms) in manifests.items() for cm in cms}

    # Up SQL files first, so that a down file sees what its up file created.
    def down_last(i: int) -> tuple[int, int]:
        is_down = paths[i].suffix in SQL_SUFFIXES and _sql_stem(paths[i])[1] == "down"
        return (1 if is_down else 0, i)

    up_contexts: dict[str, LintContext] = {}
    per_file: dict[int, list[Located]] = {}
    for i in sorted(range(len(paths)), key=down_last):
        path = paths[i]
        if path.suffix in SQL_SUFFIXES:
            per_file[i] = _lint_sql_file(path, texts[path], server_version, up_contexts)
        else:
            per_file[i] = _lint_manifest(
                path, manifests[path][0], all_configmaps, configmap_files, server_version
            )
    return [item for i in range(len(paths)) for item in per_file[i]]


def _lint_sql_file(
    path: Path, text: str, server_version: int, up_contexts: dict[str, LintContext]
) -> list[Located]:
    stem, direction = _sql_stem(path)
    if direction == "down":
        base = up_contexts.get(stem, LintContext(server_version=server_version))
        context = base.for_rollback()
    else:
        context = LintContext(server_version=server_version)
    findings = check_sql(text, context=context)
    if direction == "up":
        up_contexts[stem] = context
    return [Located(str(path), f.line, f) for f in findings]


def _lint_manifest(
    path: Path,
    documents: list[MigrationDocument],
    configmaps: list[ConfigMapDocument],
    configmap_files: dict[int, Path],
    server_version: int,
) -> list[Located]:
    out: list[Located] = []
    for doc in documents:
        resolved, origins = resolve_sql(doc, configmaps)
        analysis = analyse_migration(doc.resource.spec, resolved, server_version)
        for finding in analysis.findings:
            out.append(Located(*_file_line(path, doc, origins, configmap_files, finding), finding))
    return out


def _file_line(
    path: Path,
    doc: MigrationDocument,
    origins: dict[tuple[str, Direction], tuple[ConfigMapDocument, str]],
    configmap_files: dict[int, Path],
    finding: Finding,
) -> tuple[str, int | None]:
    """Where a finding points: the SQL's line in the manifest (or in the ConfigMap it came
    from), else the step's entry."""
    step = finding.step
    if step is None:
        return str(path), None
    origin = origins.get((step, finding.direction))
    if origin is not None and finding.line is not None:
        cm, key = origin
        start = cm.key_lines.get(key)
        source = configmap_files.get(id(cm), path)
        return str(source), (start + finding.line - 1) if start is not None else None
    start = doc.sql_lines.get((step, finding.direction))
    if start is not None and finding.line is not None:
        return str(path), start + finding.line - 1
    return str(path), doc.step_lines.get(step)


# ---------------------------------------------------------------------------------------------
# output


def _counts(located: list[Located]) -> tuple[int, int, int]:
    errors = sum(1 for x in located if x.finding.blocking)
    warnings = sum(
        1 for x in located if x.finding.severity == "warning" and not x.finding.suppressed
    )
    suppressed = sum(1 for x in located if x.finding.suppressed)
    return errors, warnings, suppressed


def _print_text(located: list[Located], files: int) -> None:
    console = Console(highlight=False, soft_wrap=True)
    styles = {"error": "bold red", "warning": "yellow"}
    for item in located:
        f = item.finding
        where = item.file + (f":{item.line}" if item.line is not None else "")
        context = ", ".join(
            x
            for x in (
                f"step {f.step}" if f.step else "",
                "down SQL" if f.direction == "down" else "",
            )
            if x
        )
        style = "dim" if f.suppressed else styles[f.severity]
        label = "suppressed " + f.severity if f.suppressed else f.severity
        console.print(
            f"{escape(where)}: [{style}]{label}[/] [bold]{escape(f.rule)}[/]"
            + (f" ({escape(context)})" if context else "")
        )
        console.print(f"    {escape(f.message)}", style="dim" if f.suppressed else None)
        if f.suppressed:
            console.print(f"    reason: {escape(f.reason or 'none given')}", style="dim")
    errors, warnings, suppressed = _counts(located)
    noun = "file" if files == 1 else "files"
    if not located:
        console.print(f"{files} {noun}: [green]no findings[/]")
        return
    summary = f"{files} {noun}: {errors} error(s), {warnings} warning(s)"
    if suppressed:
        summary += f", {suppressed} suppressed"
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


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _print_github(located: list[Located]) -> None:
    """GitHub Actions workflow commands: `::error file=…,line=…,title=…::message`."""
    for x in located:
        f = x.finding
        command = "notice" if f.suppressed else f.severity
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
