"""`dbmigrate run`: the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the operator (kopf)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    p.add_argument(
        "--liveness-port", type=int, default=8081, help="serve /healthz on this port (0: off)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="serve Prometheus /metrics on this port (0: off)",
    )
    p.add_argument(
        "--peering",
        action="store_true",
        help="use kopf peering so only one replica acts (needs the peering CRDs)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    # Imported here: kopf and the Kubernetes client take seconds to import, which no other
    # subcommand (the backfill worker in each Job pod) should pay for at start.
    import kopf

    from dbmigrate import main  # noqa: F401 - registers the kopf handlers
    from dbmigrate.metrics import registry

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prometheus query
    if args.metrics_port:
        registry.serve(args.metrics_port)

    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            liveness_endpoint=liveness,
            standalone=not args.peering,
            memo=kopf.Memo(peering=args.peering),  # read by main.configure_operator
        )
    )
    return 0
