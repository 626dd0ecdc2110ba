"""The `dbmigrate` command: `run` (the operator), `lint`, `plan`, `apply`, `rehearse`, `report`,
`backfill`, `backup`, `docs`, and the commands that read and steer migrations on a cluster with
the user's kubeconfig (`get`, `list`, `approve`, `rollback`, `suspend`, `resume`, `logs`,
`history`; the kubectl plugin runs the same).

Each subcommand lives in its own module under `dbmigrate.commands` and exposes
`register(subparsers)`; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dbmigrate import __version__

# What `kubectl dbmigrate` runs (dbmigrate.kubectl_plugin); `report` is also a `dbmigrate` one.
PLUGIN_COMMANDS = (
    "get",
    "list",
    "approve",
    "rollback",
    "suspend",
    "resume",
    "logs",
    "history",
)

SUBCOMMANDS = (
    "run",
    "lint",
    "plan",
    "apply",
    "rehearse",
    "report",
    "backfill",
    "backup",
    "docs",
    *PLUGIN_COMMANDS,
)


def build_parser(
    only: str | None = None,
    *,
    prog: str = "dbmigrate",
    description: str = "Safe PostgreSQL schema and data migrations, on Kubernetes or from a shell.",
    commands: tuple[str, ...] = SUBCOMMANDS,
) -> argparse.ArgumentParser:
    """The parser; with `only`, just that subcommand's module is imported ("": none), since the
    others' imports — kopf, the Kubernetes client — would cost a backfill worker seconds at every
    start. The kubectl plugin builds its own with its `prog` and `commands`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"dbmigrate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands:
        if only is None or name == only:
            module = importlib.import_module(f"dbmigrate.commands.{name}")
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in args_in if not a.startswith("-")), None)
    only = chosen if chosen in SUBCOMMANDS else None
    if chosen is None and not {"-h", "--help"} & set(args_in):
        only = ""  # `--version` (or nothing): no subcommand needs importing
    return dispatch(build_parser(only).parse_args(args_in))


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen subcommand's handler; its exit code."""
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
