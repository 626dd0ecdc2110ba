"""`dbmigrate approve NAME --by WHO [-n NS]` (also `kubectl dbmigrate approve`): sets the
`dbmigrate.io/approved-by` annotation, the checklist's Approval item. The API server records
who set it (the migration's status shows it as `approvalSetBy`)."""

from __future__ import annotations

import argparse

from dbmigrate.api.schema import APPROVAL_ANNOTATION
from dbmigrate.commands.cluster_cli import USAGE, add_namespace, fail, namespace_of, patch_and_say


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("approve", help="approve a migration (the checklist's Approval item)")
    p.add_argument("name", help="the DatabaseMigration")
    p.add_argument("--by", required=True, metavar="WHO", help="who approves (a name, an email)")
    add_namespace(p)
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    who = args.by.strip()
    if not who:
        return fail("approve", "--by must name who approves", USAGE)
    patch = {"metadata": {"annotations": {APPROVAL_ANNOTATION: who}}}
    return patch_and_say("approve", namespace_of(args), args.name, patch, f"approved by {who}")
