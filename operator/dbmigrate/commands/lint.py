"""`dbmigrate lint FILE…`: lint migration SQL files and DatabaseMigration manifests.

Inputs: `.sql` files (the seed's `{timestamp}_{description}.{up|down}.sql` naming: a `.down.sql`
file is linted as rollback SQL, after its `.up.sql` when both are given, so it knows what the
up created) and `.yaml`/`.yml` files with DatabaseMigration documents (several per file allowed;
ConfigMaps in the given files resolve `upFrom`/`downFrom`; other kinds are ignored).

Output (`commands.lint_output`): `--format text`, `json`, `github` (workflow commands that
GitHub Actions shows as annotations on the lines) or `sarif` (code scanning). With `--dsn` the
linter reads the server's version and the sizes of the tables the SQL touches (a rewrite of a
200-row table is information, of a 50 M-row one an error); the DSN is never printed. Exit
status: 0 no error findings, 1 error findings (or the database could not be read), 2 usage
error (missing file, bad YAML, invalid DatabaseMigration, malformed DSN).

It starts fast (a pre-commit hook runs it on every commit): the API models (pydantic), YAML,
rich and the database driver are imported only when the input or the options need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dbmigrate.commands.lint_output import FORMATS, Located, print_findings
from dbmigrate.core.lint import (
    DEFAULT_SERVER_VERSION,
    Finding,
    LintContext,
    analyse_migration,
    check_sql,
)
from dbmigrate.core.lint.context import Direction, TableEstimate, sizes_by_key
from dbmigrate.core.locks import statement_effect
from dbmigrate.core.statements import SqlSyntaxError, parse_statements

if TYPE_CHECKING:
    from dbmigrate.core.lint.documents import ConfigMapDocument, MigrationDocument

SQL_SUFFIXES = (".sql",)
YAML_SUFFIXES = (".yaml", ".yml")


class UsageError(Exception):
    """Input the linter cannot work with (exit status 2)."""


class DatabaseUnreadable(Exception):
    """--dsn was given and the database could not be read (exit status 1); no DSN in it."""


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
        "--pg-version",
        "--server-version",
        dest="pg_version",
        type=int,
        default=None,
        metavar="MAJOR",
        help="PostgreSQL major version the SQL will run on (default: the server's with --dsn, "
        f"else {DEFAULT_SERVER_VERSION})",
    )
    p.add_argument(
        "--dsn",
        default=None,
        help="read the server's version and the sizes of the tables the SQL touches from this "
        "database (read only; never printed)",
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    paths = [Path(f) for f in args.files]
    version = args.pg_version or DEFAULT_SERVER_VERSION
    sizes: dict[str, TableEstimate] = {}
    try:
        if args.dsn:
            server_version, sizes = read_database(args.dsn, tables_named(paths, version))
            version = args.pg_version or server_version
        located = lint_files(paths, version, sizes)
    except UsageError as exc:
        print(f"dbmigrate lint: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnreadable as exc:
        print(f"dbmigrate lint: cannot read the database: {exc}", file=sys.stderr)
        return 1
    print_findings(located, args.format, len(args.files))
    return 1 if any(item.finding.blocking for item in located) else 0


def read_database(dsn: str, tables: list[str]) -> tuple[int, dict[str, TableEstimate]]:
    """The server's major version and the size estimates of those tables that exist."""
    from dbmigrate.db import catalog
    from dbmigrate.db.errors import MalformedDsn, check_dsn

    try:
        check_dsn(dsn, "--dsn")
    except MalformedDsn as exc:
        raise UsageError(str(exc)) from None
    try:
        return catalog.read_tables(dsn, tables)
    except catalog.DatabaseError as exc:
        raise DatabaseUnreadable(catalog.redact(str(exc), dsn)) from None


def tables_named(paths: list[Path], server_version: int) -> list[str]:
    """The tables the files' SQL locks, in order of first mention (what --dsn reads sizes of);
    files that cannot be read or parsed are left to the lint run to report."""
    out: dict[str, None] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if path.suffix in YAML_SUFFIXES:
            out.update(dict.fromkeys(_manifest_tables(text, server_version)))
            continue
        try:
            statements = parse_statements(text)
        except SqlSyntaxError:
            continue
        for s in statements:
            for lock in statement_effect(s.node, server_version).locks:
                if not lock.of_index_table:
                    out[lock.relation] = None
    return list(out)


def _manifest_tables(text: str, server_version: int) -> list[str]:
    from dbmigrate.core.lint.documents import (
        ManifestError,
        parse_manifests,
        resolve_sql,
    )
    from dbmigrate.core.plan import tables_touched

    try:
        migrations, configmaps = parse_manifests(text)
    except ManifestError:
        return []
    tables: list[str] = []
    for doc in migrations:
        resolved, _ = resolve_sql(doc, configmaps)
        tables += tables_touched(doc.resource.spec, resolved, server_version)
    return tables


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


def lint_files(
    paths: list[Path],
    server_version: int = DEFAULT_SERVER_VERSION,
    table_sizes: Mapping[str, TableEstimate] | None = None,
) -> list[Located]:
    """Findings of every file, in the order given (a down file after its up file)."""
    texts: dict[Path, str] = {}
    for path in paths:
        if path.suffix not in SQL_SUFFIXES + YAML_SUFFIXES:
            raise UsageError(f"{path}: not a .sql, .yaml or .yml file")
        texts[path] = _read(path)

    manifests: dict[Path, tuple[list[MigrationDocument], list[ConfigMapDocument]]] = {}
    if any(path.suffix in YAML_SUFFIXES for path in texts):
        from dbmigrate.core.lint.documents import (
            ManifestError,
            parse_manifests,
        )
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
            per_file[i] = _lint_sql_file(
                path, texts[path], server_version, up_contexts, table_sizes
            )
        else:
            per_file[i] = _lint_manifest(
                path,
                manifests[path][0],
                all_configmaps,
                configmap_files,
                server_version,
                table_sizes,
            )
    return [item for i in range(len(paths)) for item in per_file[i]]


def _lint_sql_file(
    path: Path,
    text: str,
    server_version: int,
    up_contexts: dict[str, LintContext],
    table_sizes: Mapping[str, TableEstimate] | None,
) -> list[Located]:
    stem, direction = _sql_stem(path)
    fresh = LintContext(server_version=server_version, table_sizes=sizes_by_key(table_sizes))
    context = up_contexts.get(stem, fresh).for_rollback() if direction == "down" else fresh
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
    table_sizes: Mapping[str, TableEstimate] | None,
) -> list[Located]:
    from dbmigrate.core.lint.documents import resolve_sql

    out: list[Located] = []
    for doc in documents:
        resolved, origins = resolve_sql(doc, configmaps)
        analysis = analyse_migration(doc.resource.spec, resolved, server_version, table_sizes)
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
