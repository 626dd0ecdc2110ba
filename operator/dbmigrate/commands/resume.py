"""`dbmigrate resume NAME [-n NS]`: `spec.suspend: false` (see `dbmigrate.commands.suspend`)."""

from __future__ import annotations

import argparse

from dbmigrate.commands.suspend import register_switch


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_switch(sub, "resume", False, "resume a suspended migration")
