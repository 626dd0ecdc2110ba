"""`dbmigrate get NAME [-n NS] [--watch] [-o json]` (also `kubectl dbmigrate get`): a
migration as a tree of its steps — state, kind, duration, the backfill's bar with its rate and
ETA — with the analysis measurements against their thresholds, the rollout revision, the
checklist, the post-deployment watch and the conditions.

`--watch` draws it again at every change of the object (the Kubernetes watch API): on a
terminal the screen is redrawn; written to a pipe or a file, a new block is appended per change
(plain lines, no colours). Ctrl-C ends it (exit 0). `-o json` prints the same facts as JSON (one
document per change with --watch).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from typing import Any

from dbmigrate.commands.cluster_cli import (
    DONE,
    REFUSED,
    add_namespace,
    add_output,
    namespace_of,
    now,
    run,
)
from dbmigrate.core.display import WIDTH, Screen, render_get, summarize

CLEAR = "\x1b[H\x1b[2J"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "get",
        help="show a migration: its steps as a tree, progress, analysis, checklist",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the DatabaseMigration")
    add_namespace(p)
    add_output(p)
    p.add_argument(
        "-w", "--watch", action="store_true", help="draw it again at every change (Ctrl-C ends)"
    )
    p.set_defaults(handler=_handle)


def screen() -> Screen:
    """A terminal: colours, its width (at most 80 is what the layout is made for, wider is
    fine); anything else: plain lines of 80 columns."""
    if sys.stdout.isatty():
        return Screen(tty=True, width=max(40, shutil.get_terminal_size((WIDTH, 24)).columns))
    return Screen(tty=False, width=WIDTH)


def render(obj: dict[str, Any], output: str, where: Screen) -> str:
    if output == "json":
        return json.dumps(summarize(obj, now()), indent=2, ensure_ascii=False) + "\n"
    return "\n".join(render_get(obj, now(), where)) + "\n"


def _handle(args: argparse.Namespace) -> int:
    namespace = namespace_of(args)
    what = f"get DatabaseMigration {args.name!r} in namespace {namespace!r}"
    if args.watch:
        return run("get", lambda: _watch(namespace, args.name, args.output), f"watch: {what}")
    return run("get", lambda: _once(namespace, args.name, args.output), what)


def _once(namespace: str, name: str, output: str) -> int:
    from dbmigrate.kube.plugin import get_migration

    sys.stdout.write(render(get_migration(namespace, name), output, screen()))
    return DONE


def _watch(namespace: str, name: str, output: str) -> int:
    from dbmigrate.kube.plugin import watch_migration

    where = screen()
    redraw = where.tty and output == "text"
    shown = None
    # Ctrl-C ends the watch even where the plugin was started with SIGINT ignored (a parent
    # started in the background): Python then installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for obj in watch_migration(namespace, name):
            if obj is None:
                text = f"databasemigration {namespace}/{name}: not found (deleted?)\n"
            else:
                text = render(obj, output, where)
            if text == shown:
                continue  # a change that shows nothing new (e.g. only the resourceVersion)
            shown = text
            if redraw:
                sys.stdout.write(CLEAR + text)
            else:
                sys.stdout.write(text)
                if output == "text":
                    sys.stdout.write("\n")  # a blank line between the blocks
            sys.stdout.flush()
    except KeyboardInterrupt:
        if redraw:
            sys.stdout.write("\n")
        return DONE
    return REFUSED
