"""`kubectl dbmigrate`: the kubectl plugin installed with the package (`kubectl-dbmigrate` on
the PATH; kubectl finds it by that name).

It runs the `dbmigrate` subcommands that read the cluster with the user's own kubeconfig and
RBAC — today `report NAME [-n NAMESPACE]` — with kubectl's argument conventions (kubectl hands
the plugin every argument after its name, `-n` included).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dbmigrate import __version__

PLUGIN_COMMANDS = ("report",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl dbmigrate",
        description="dbmigrate's kubectl plugin: what the operator did, with your kubeconfig.",
    )
    parser.add_argument("--version", action="version", version=f"dbmigrate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in PLUGIN_COMMANDS:
        importlib.import_module(f"dbmigrate.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
