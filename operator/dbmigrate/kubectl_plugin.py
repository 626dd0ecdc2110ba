"""`kubectl dbmigrate`: the kubectl plugin installed with the package (`kubectl-dbmigrate` on
the PATH; kubectl finds it by that name).

It runs the `dbmigrate` subcommands that read and steer migrations with the user's own
kubeconfig and RBAC — `get`, `list`, `approve`, `rollback`, `suspend`, `resume`, `logs`,
`history` and `report` — with kubectl's argument conventions (kubectl hands the plugin every
argument after its name, `-n` included). Modelled on `kubectl argo rollouts`.
"""

from __future__ import annotations

import sys

from dbmigrate.cli import PLUGIN_COMMANDS as CLUSTER_COMMANDS
from dbmigrate.cli import build_parser, dispatch

PLUGIN_COMMANDS = (*CLUSTER_COMMANDS, "report")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        prog="kubectl dbmigrate",
        description="dbmigrate's kubectl plugin: what the operator did, with your kubeconfig.",
        commands=PLUGIN_COMMANDS,
    )
    return dispatch(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
