"""What the commands that talk to the cluster with the user's kubeconfig share (`get`, `list`,
`approve`, `rollback`, `suspend`, `resume`, `logs`, `history`; the kubectl plugin runs them):
the `-n` argument, the exit codes, and one way of saying that a call was refused.

Exit codes: 0 done; 1 the cluster refused or has no such object; 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

DONE, REFUSED, USAGE = 0, 1, 2


def add_namespace(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")


def add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="json: machine-readable"
    )


def namespace_of(args: argparse.Namespace) -> str:
    from dbmigrate.kube.cluster import current_namespace  # the client only when it is used

    return str(args.namespace or current_namespace())


def now() -> datetime:
    return datetime.now(UTC)


def fail(command: str, message: str, code: int = REFUSED) -> int:
    print(f"dbmigrate {command}: {message}", file=sys.stderr)
    return code


def run(command: str, action: Callable[[], int], what: str) -> int:
    """`action()`, with the cluster's refusals said in one line: not found, forbidden (which
    verb on what), or the API server's message."""
    from urllib3.exceptions import HTTPError

    from dbmigrate.kube.cluster import Forbidden, NotFound
    from dbmigrate.kube.plugin import ApiError

    try:
        return action()
    except HTTPError as exc:
        return fail(command, f"cannot reach the API server: {type(exc).__name__}")
    except NotFound as exc:
        return fail(command, str(exc))
    except Forbidden as exc:
        return fail(command, f"you may not {what}: {exc}")
    except ApiError as exc:
        return fail(command, f"the API server refused: {exc}")


def patch_and_say(command: str, namespace: str, name: str, patch: dict[str, Any], said: str) -> int:
    """Merge-patch the migration and print what was done (`said`)."""
    from dbmigrate.kube.plugin import merge_patch_migration

    def act() -> int:
        merge_patch_migration(namespace, name, patch)
        print(f"databasemigration {namespace}/{name} {said}")
        return DONE

    return run(command, act, f"patch DatabaseMigration {namespace}/{name}")
