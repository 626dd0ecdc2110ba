"""`dbmigrate apply` (not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apply", help="(not implemented yet)")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    print("dbmigrate apply: not implemented yet", file=sys.stderr)
    return 2
