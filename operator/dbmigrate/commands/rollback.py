"""`dbmigrate rollback NAME [-n NS]` (also `kubectl dbmigrate rollback`): asks the operator to
roll the migration back (`dbmigrate.io/rollback: requested`): the steps done are reverted with
their down SQL, in reverse order, as after an SLO breach. The status says what was done, and
why a request is refused (e.g. past the point of no return)."""

from __future__ import annotations

import argparse

from dbmigrate.api.schema import ROLLBACK_ANNOTATION, ROLLBACK_REQUESTED
from dbmigrate.commands.cluster_cli import add_namespace, namespace_of, patch_and_say


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollback", help="ask the operator to roll a migration back")
    p.add_argument("name", help="the DatabaseMigration")
    add_namespace(p)
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    patch = {"metadata": {"annotations": {ROLLBACK_ANNOTATION: ROLLBACK_REQUESTED}}}
    return patch_and_say("rollback", namespace_of(args), args.name, patch, "rollback requested")
