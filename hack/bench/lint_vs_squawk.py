"""Lint accuracy and speed: `dbmigrate lint` against squawk on a labelled corpus.

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("Lint accuracy:
dbmigrate vs squawk"), then the entries where the two disagree and those dbmigrate gets wrong.

    python hack/bench/lint_vs_squawk.py                    # both linters
    python hack/bench/lint_vs_squawk.py --ours-only        # skip squawk
    python hack/bench/lint_vs_squawk.py --json results.json  # also dump per-entry results

The corpus (`lint_corpus.yaml` beside this script) holds labelled migration SQL: dangerous (a
lock that blocks reads or writes for longer than an instant on a big busy table, or breaks the
running application) or safe; its header says what the labels assume. Each entry is written to
its own .sql file and linted by:

- dbmigrate: `python -m dbmigrate lint --format json` of the repository this script lives in
  (PYTHONPATH=<repo>/operator), `--server-version` from the entry (15 when absent);
- squawk: the `squawk-cli` wheel from PyPI (it ships the binary), pinned to SQUAWK_VERSION and
  installed on first use into its own virtualenv under ~/.cache/dbmigrate/bench/squawk-venv;
  `squawk --reporter json`, `--pg-version` from the entry. Squawk runs in three
  configurations: its timeout rules off (require-lock-timeout, require-statement-timeout:
  dbmigrate's executor sets lock_timeout and statement_timeout itself, so they would only add
  noise), all default rules, and timeout plus style rules off (rules about idempotency, integer
  width, column types and enum order, not locks: the closest to dbmigrate, whose style rules
  are warnings). Squawk gives every violation the level "Warning" but exits 1 on any of them,
  so each squawk violation counts as an error.

A dangerous entry is caught when the linter reports at least one error (dbmigrate: an
unsuppressed finding of severity error; squawk: any violation); a safe entry with an error is a
false error. "Any finding" also counts dbmigrate's warnings. Speed: statements per second
linting the whole corpus concatenated into one file (best of --speed-runs, wall time including
process start), and the wall time of a 20-statement file including process start (median of
--runs). Both linters get the same files, one process per configuration and server version for
the accuracy run (files are linted independently by both).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pglast
import yaml
from _common import installed_env, machine, markdown_table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORPUS = HERE / "lint_corpus.yaml"
DEFAULT_SERVER_VERSION = 15

SQUAWK_VERSION = "2.70.0"
SQUAWK_VENV = Path.home() / ".cache" / "dbmigrate" / "bench" / "squawk-venv"
SQUAWK_TIMEOUT_RULES = ("require-lock-timeout", "require-statement-timeout")
SQUAWK_STYLE_RULES = (
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamp-tz",
    "ban-char-field",
    "require-enum-value-ordering",
)


@dataclass(frozen=True)
class Entry:
    index: int
    sql: str
    label: str
    reason: str
    source: str
    server_version: int

    @property
    def dangerous(self) -> bool:
        return self.label == "dangerous"


@dataclass
class Verdict:
    """What one linter configuration said about one entry."""

    errors: list[str] = field(default_factory=list)  # rule ids of error findings
    warnings: list[str] = field(default_factory=list)  # rule ids of other findings

    @property
    def error(self) -> bool:
        return bool(self.errors)

    @property
    def any(self) -> bool:
        return bool(self.errors or self.warnings)

    def rules(self) -> str:
        parts = [*self.errors, *(f"{r} (warning)" for r in self.warnings)]
        return ", ".join(dict.fromkeys(parts)) or "nothing"


@dataclass(frozen=True)
class Linter:
    """A linter configuration: `command(files, server_version)` and its output parser."""

    name: str
    command: Callable[[Sequence[str], int], list[str]]
    parse: Callable[[str], dict[str, Verdict]]
    env: dict[str, str]


def load_corpus(path: Path) -> list[Entry]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = []
    for i, item in enumerate(raw):
        if item.get("label") not in ("dangerous", "safe"):
            raise SystemExit(f"{path}: entry {i}: label must be dangerous or safe")
        entries.append(
            Entry(
                index=i,
                sql=item["sql"].strip(),
                label=item["label"],
                reason=item["reason"],
                source=item["source"],
                server_version=int(item.get("server_version", DEFAULT_SERVER_VERSION)),
            )
        )
    return entries


# ---------------------------------------------------------------------------------------------
# the linters


def ours(dsn: str | None = None) -> Linter:
    env = installed_env(REPO)

    def command(files: Sequence[str], server_version: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dbmigrate",
            "lint",
            "--format",
            "json",
            "--server-version",
            str(server_version),
            *(["--dsn", dsn] if dsn else []),
            *files,
        ]

    def parse(stdout: str) -> dict[str, Verdict]:
        out: dict[str, Verdict] = {}
        for f in json.loads(stdout)["findings"]:
            if f.get("suppressed"):
                continue
            verdict = out.setdefault(f["file"], Verdict())
            (verdict.errors if f["severity"] == "error" else verdict.warnings).append(f["rule"])
        return out

    name = "dbmigrate lint --dsn (the corpus schema)" if dsn else "dbmigrate lint"
    return Linter(name, command, parse, env)


@contextlib.contextmanager
def corpus_database() -> Iterator[str]:
    """A scratch PostgreSQL holding `lint_corpus_schema.sql` (the test tooling's server)."""
    from dbmigrate_dev.postgres import PostgresServer, free_port

    with tempfile.TemporaryDirectory(prefix="lint-corpus-db-") as tmp:
        server = PostgresServer(Path(tmp) / "pgdata", free_port())
        server.init()
        server.start()
        try:
            dsn = server.create_database("corpus")
            subprocess.run(
                [sys.executable, "-c", _LOAD_SCHEMA, dsn, str(HERE / "lint_corpus_schema.sql")],
                check=True,
            )
            yield dsn
        finally:
            server.stop()


_LOAD_SCHEMA = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(open(sys.argv[2]).read())
"""


def squawk_binary() -> Path:
    return SQUAWK_VENV / "bin" / "squawk"


def squawk_version(binary: Path) -> str | None:
    if not binary.exists():
        return None
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    words = done.stdout.split()
    return words[-1] if done.returncode == 0 and words else None


def ensure_squawk() -> Path:
    """The squawk binary of `squawk-cli==SQUAWK_VERSION`, installed into its own venv."""
    binary = squawk_binary()
    if squawk_version(binary) != SQUAWK_VERSION:
        print(f"installing squawk-cli=={SQUAWK_VERSION} into {SQUAWK_VENV}", file=sys.stderr)
        if not (SQUAWK_VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(SQUAWK_VENV)], check=True)
        subprocess.run(
            [
                str(SQUAWK_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"squawk-cli=={SQUAWK_VERSION}",
            ],
            check=True,
        )
        found = squawk_version(binary)
        if found != SQUAWK_VERSION:
            raise SystemExit(f"squawk-cli=={SQUAWK_VERSION} installed, but it says {found}")
    return binary


def squawk(binary: Path, name: str, exclude: Sequence[str]) -> Linter:
    def command(files: Sequence[str], server_version: int) -> list[str]:
        cmd = [str(binary), "--reporter", "json", f"--pg-version={server_version}"]
        if exclude:
            cmd.append("--exclude=" + ",".join(exclude))
        return [*cmd, *files]

    def parse(stdout: str) -> dict[str, Verdict]:
        out: dict[str, Verdict] = {}
        for v in json.loads(stdout or "[]"):
            # Every violation fails squawk's run (exit 1), whatever its level.
            out.setdefault(v["file"], Verdict()).errors.append(v["rule_name"])
        return out

    return Linter(name, command, parse, dict(os.environ))


def run(linter: Linter, files: Sequence[str], server_version: int, cwd: Path) -> str:
    done = subprocess.run(
        linter.command(files, server_version),
        cwd=cwd,
        env=linter.env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"{linter.name} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def lint_entries(linter: Linter, entries: list[Entry], workdir: Path) -> dict[int, Verdict]:
    """Each entry in its own file; one linter process per server version."""
    names = {e.index: f"entry_{e.index:03d}.sql" for e in entries}
    for e in entries:
        (workdir / names[e.index]).write_text(e.sql + "\n", encoding="utf-8")
    verdicts: dict[int, Verdict] = {}
    for version in sorted({e.server_version for e in entries}):
        group = [e for e in entries if e.server_version == version]
        by_file = linter.parse(run(linter, [names[e.index] for e in group], version, workdir))
        for e in group:
            verdicts[e.index] = by_file.get(names[e.index], Verdict())
    return verdicts


# ---------------------------------------------------------------------------------------------
# speed


def timed_runs(linter: Linter, path: Path, runs: int) -> list[float]:
    run(linter, [path.name], DEFAULT_SERVER_VERSION, path.parent)  # warm-up (page cache)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        run(linter, [path.name], DEFAULT_SERVER_VERSION, path.parent)
        walls.append(time.perf_counter() - start)
    return walls


def twenty_statement_file(entries: list[Entry]) -> str:
    """20 single-statement entries spread over the corpus (dangerous and safe)."""
    singles = [e for e in entries if len(pglast.parse_sql(e.sql)) == 1]
    step = max(1, len(singles) // 20)
    picked = singles[::step][:20]
    return "\n".join(e.sql for e in picked) + "\n"


# ---------------------------------------------------------------------------------------------
# report


def pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.1f} %)" if total else "-"


def one_line(sql: str, limit: int = 160) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--ours-only", action="store_true", help="skip squawk")
    parser.add_argument(
        "--with-database",
        action="store_true",
        help="also lint with --dsn against a scratch PostgreSQL holding the corpus's schema "
        "(lint_corpus_schema.sql)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="dump per-entry results")
    parser.add_argument("--runs", type=int, default=10, help="runs of the 20-statement file")
    parser.add_argument("--speed-runs", type=int, default=5, help="runs of the whole corpus")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="concatenate the corpus this many times for statements/s (process start weighs "
        "less in a bigger file)",
    )
    args = parser.parse_args()

    entries = load_corpus(args.corpus)
    database = corpus_database() if args.with_database else contextlib.nullcontext(None)
    with database as dsn:
        compare(args, entries, dsn)


def compare(args: argparse.Namespace, entries: list[Entry], dsn: str | None) -> None:
    dangerous = [e for e in entries if e.dangerous]
    safe = [e for e in entries if not e.dangerous]
    linters = [ours()] + ([ours(dsn)] if dsn else [])
    version_note = ""
    if not args.ours_only:
        binary = ensure_squawk()
        version_note = f"squawk {squawk_version(binary)} (squawk-cli from PyPI)"
        linters += [
            squawk(binary, "squawk, timeout rules off", SQUAWK_TIMEOUT_RULES),
            squawk(binary, "squawk, all default rules", ()),
            squawk(
                binary,
                "squawk, timeout and style rules off",
                SQUAWK_TIMEOUT_RULES + SQUAWK_STYLE_RULES,
            ),
        ]

    results: dict[str, dict[int, Verdict]] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dbmigrate-lint-bench-") as tmp:
        work = Path(tmp)
        (work / "entries").mkdir()
        whole = work / "corpus.sql"
        whole.write_text("\n".join([e.sql for e in entries] * args.repeat) + "\n", encoding="utf-8")
        statements = len(pglast.parse_sql(whole.read_text(encoding="utf-8")))
        corpus_statements = statements // args.repeat
        small = work / "twenty.sql"
        small.write_text(twenty_statement_file(entries), encoding="utf-8")
        assert len(pglast.parse_sql(small.read_text(encoding="utf-8"))) == 20

        for linter in linters:
            verdicts = lint_entries(linter, entries, work / "entries")
            results[linter.name] = verdicts
            caught = sum(verdicts[e.index].error for e in dangerous)
            caught_any = sum(verdicts[e.index].any for e in dangerous)
            false_err = sum(verdicts[e.index].error for e in safe)
            false_any = sum(verdicts[e.index].any for e in safe)
            best = min(timed_runs(linter, whole, args.speed_runs))
            twenty = statistics.median(timed_runs(linter, small, args.runs))
            rows.append(
                [
                    linter.name,
                    pct(caught, len(dangerous)),
                    pct(caught_any, len(dangerous)),
                    pct(false_err, len(safe)),
                    pct(false_any, len(safe)),
                    f"{statements / best:,.0f}",
                    f"{twenty:.3f} s",
                ]
            )

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    own = sum(e.source == "own" for e in entries)
    print(
        f"Lint accuracy — {machine()}, load average {os.getloadavg()[0]:.1f}; "
        f"dbmigrate {commit or '(no git)'}" + (f", {version_note}" if version_note else "")
    )
    print(
        f"Corpus: {len(entries)} entries ({len(dangerous)} dangerous, {len(safe)} safe; "
        f"{own} own, {len(entries) - own} from squawk's docs), {corpus_statements} statements. "
        f"Speed: whole corpus in one file"
        + (f" ({args.repeat} times, {statements} statements)" if args.repeat > 1 else "")
        + f", best of {args.speed_runs}; "
        f"20-statement file, median of {args.runs}; wall time incl. process start.\n"
    )
    print(
        markdown_table(
            [
                "linter",
                "dangerous caught (error)",
                "dangerous caught (any finding)",
                "false errors on safe",
                "any finding on safe",
                "statements/s",
                "20-statement file",
            ],
            rows,
        )
    )

    ours_v = results[linters[0].name]
    if not args.ours_only:
        other = results["squawk, timeout rules off"]
        disagree = [e for e in entries if ours_v[e.index].error != other[e.index].error]
        print(f"\n## Disagreements: dbmigrate vs squawk (timeout rules off): {len(disagree)}\n")
        for e in disagree:
            print(f"- [{e.index}] {e.label}: `{one_line(e.sql)}`")
            print(f"  - why: {e.reason}")
            print(f"  - dbmigrate: {ours_v[e.index].rules()}")
            print(f"  - squawk: {other[e.index].rules()}")

    misses = [e for e in dangerous if not ours_v[e.index].error]
    false_errors = [e for e in safe if ours_v[e.index].error]
    print(f"\n## dbmigrate misses (dangerous, no error): {len(misses)}\n")
    for e in misses:
        print(f"- [{e.index}] `{one_line(e.sql)}` (said: {ours_v[e.index].rules()})")
        print(f"  - why dangerous: {e.reason}")
    print(f"\n## dbmigrate false errors (safe, error): {len(false_errors)}\n")
    for e in false_errors:
        print(f"- [{e.index}] `{one_line(e.sql)}` (said: {ours_v[e.index].rules()})")
        print(f"  - why safe: {e.reason}")
    if dsn:
        with_db = results[linters[1].name]
        changed = [e for e in entries if with_db[e.index].error != ours_v[e.index].error]
        print(f"\n## What the database changes (--dsn, the corpus schema): {len(changed)}\n")
        for e in changed:
            print(f"- [{e.index}] {e.label}: `{one_line(e.sql)}`")
            print(f"  - without: {ours_v[e.index].rules()}; with: {with_db[e.index].rules()}")

    if args.json:
        dump = [
            {
                "index": e.index,
                "sql": e.sql,
                "label": e.label,
                "reason": e.reason,
                "source": e.source,
                "server_version": e.server_version,
                "results": {
                    name: {"errors": v[e.index].errors, "warnings": v[e.index].warnings}
                    for name, v in results.items()
                },
            }
            for e in entries
        ]
        args.json.write_text(json.dumps(dump, indent=2) + "\n", encoding="utf-8")
        print(f"\nper-entry results: {args.json}")


if __name__ == "__main__":
    main()
