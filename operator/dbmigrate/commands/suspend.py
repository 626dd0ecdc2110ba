"""`dbmigrate suspend NAME [-n NS]` and `dbmigrate resume NAME` (also through `kubectl
dbmigrate`): set `spec.suspend` true or false. A suspended migration starts no new step (the
step under way finishes) until it is resumed."""

from __future__ import annotations

import argparse

from dbmigrate.commands.cluster_cli import add_namespace, namespace_of, patch_and_say


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_switch(sub, "suspend", True, "suspend a migration: no new step starts")


def register_switch(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: str,
    suspend: bool,
    help_: str,
) -> None:
    p = sub.add_parser(command, help=help_, description=__doc__)
    p.add_argument("name", help="the DatabaseMigration")
    add_namespace(p)
    p.set_defaults(handler=lambda args: _switch(args, command, suspend))


def _switch(args: argparse.Namespace, command: str, suspend: bool) -> int:
    said = "suspended" if suspend else "resumed"
    patch = {"spec": {"suspend": suspend}}
    return patch_and_say(command, namespace_of(args), args.name, patch, said)
