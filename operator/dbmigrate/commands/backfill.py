"""`dbmigrate backfill` (not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backfill", help="(not implemented yet)")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    print("dbmigrate backfill: not implemented yet", file=sys.stderr)
    return 2
