"""`dbmigrate list [-n NS | -A] [-o json]` (also `kubectl dbmigrate list`): one line per
migration — name, phase, progress, current step, age."""

from __future__ import annotations

import argparse
import json
import sys

from dbmigrate.commands.cluster_cli import DONE, USAGE, add_namespace, add_output, fail, now, run
from dbmigrate.core.display import list_rows, render_list


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="one line per migration", description=__doc__)
    add_namespace(p)
    p.add_argument(
        "-A", "--all-namespaces", action="store_true", help="the migrations of every namespace"
    )
    add_output(p)
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if args.all_namespaces and args.namespace:
        return fail("list", "-n and -A exclude each other", USAGE)
    from dbmigrate.kube.cluster import current_namespace
    from dbmigrate.kube.plugin import list_migrations

    namespace = None if args.all_namespaces else (args.namespace or current_namespace())

    def act() -> int:
        rows = list_rows(list_migrations(namespace), now())
        if args.output == "json":
            sys.stdout.write(json.dumps({"items": rows}, indent=2) + "\n")
        elif not rows:
            where = "any namespace" if namespace is None else f"namespace {namespace!r}"
            print(f"no DatabaseMigrations in {where}", file=sys.stderr)
        else:
            lines = render_list(rows, all_namespaces=namespace is None)
            sys.stdout.write("\n".join(lines) + "\n")
        return DONE

    where = "every namespace" if namespace is None else f"namespace {namespace!r}"
    return run("list", act, f"list DatabaseMigrations in {where}")
