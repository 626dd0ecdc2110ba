"""`dbmigrate logs NAME [STEP] [-n NS] [-f]` (also `kubectl dbmigrate logs`): the log of the
Job pod of a step (`status.steps[].job`: a backfill's workers, a tool Job), or of the backup Job
(STEP `backup`), read through the API server's pods/log as `kubectl logs` reads it. Without
STEP: the step under way, else the last step that ran a Job. Each pod of the Job (a retry, a
backfill's parallel workers) is printed under its own header, oldest first; `-f` follows the
newest pod until it ends.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from dbmigrate.commands.cluster_cli import DONE, REFUSED, add_namespace, fail, namespace_of, run

BACKUP = "backup"
# Pod phases after which a log does not grow.
ENDED = frozenset({"Succeeded", "Failed"})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "logs",
        help="the log of a step's Job pod (or of the backup Job)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the DatabaseMigration")
    p.add_argument("step", nargs="?", help=f"the step (default: the current one); {BACKUP!r}")
    add_namespace(p)
    p.add_argument("-f", "--follow", action="store_true", help="follow the newest pod's log")
    p.set_defaults(handler=_handle)


def job_of(obj: dict[str, Any], step: str | None) -> tuple[str | None, str]:
    """(the Job's name or None, what it is: `step X` or `the backup`) from the status."""
    status = obj.get("status") or {}
    if step == BACKUP:
        return (status.get("backup") or {}).get("job"), "the backup"
    steps = [s for s in status.get("steps") or [] if isinstance(s, dict)]
    if step is not None:
        found = next((s for s in steps if s.get("name") == step), None)
        if found is None:
            names = ", ".join(s.get("name", "?") for s in steps) or "none yet"
            raise LookupError(f"no step {step!r} in its status (steps: {names})")
        return found.get("job"), f"step {step!r}"
    current = next((s for s in steps if s.get("name") == status.get("currentStep")), None)
    if current is not None and current.get("job"):
        return current["job"], f"step {current['name']!r}"
    with_job = [s for s in steps if s.get("job")]
    if with_job:
        return with_job[-1]["job"], f"step {with_job[-1]['name']!r}"
    return None, "any step"


def _handle(args: argparse.Namespace) -> int:
    namespace = namespace_of(args)
    return run(
        "logs",
        lambda: _logs(namespace, args.name, args.step, args.follow),
        f"read DatabaseMigration {args.name!r} and its Job's pod logs in namespace {namespace!r}",
    )


def _logs(namespace: str, name: str, step: str | None, follow: bool) -> int:
    from dbmigrate.kube import plugin as kube

    obj = kube.get_migration(namespace, name)
    try:
        job, what = job_of(obj, step)
    except LookupError as exc:
        return fail("logs", str(exc))
    if job is None:
        return fail("logs", f"{what} of {namespace}/{name} has run no Job (yet)")
    pods = kube.job_pods(namespace, job)
    if not pods:
        return fail("logs", f"Job {job!r} ({what}) has no pods (yet, or any more)")
    for i, pod in enumerate(pods):
        pod_name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]["name"]
        phase = (pod.get("status") or {}).get("phase", "Pending")
        newest = i == len(pods) - 1
        if len(pods) > 1:
            print(f"==> pod {pod_name} ({phase}) <==", flush=True)
        if phase == "Pending":
            print("(not started yet)")
            continue
        following = follow and newest and phase not in ENDED
        try:
            _copy(namespace, pod_name, container, following)
        except KeyboardInterrupt:
            return DONE
    return DONE if pods else REFUSED


def _copy(namespace: str, pod: str, container: str, follow: bool) -> None:
    """The log to stdout. Following, the stream is read by a helper thread while this one
    watches the pod's phase: a kubelet ends the stream when the container ends, but not every
    node does, so the command ends one second after the pod has ended, whichever comes first."""
    from dbmigrate.kube import plugin as kube
    from dbmigrate.kube.cluster import NotFound

    def copy() -> None:
        out = sys.stdout.buffer
        for chunk in kube.pod_log(namespace, pod, container, follow=follow):
            out.write(chunk)
            out.flush()

    if not follow:
        copy()
        return
    errors: list[BaseException] = []

    def copy_noting_errors() -> None:
        try:
            copy()
        except BaseException as exc:  # said by the main thread
            errors.append(exc)

    reader = threading.Thread(target=copy_noting_errors, daemon=True)
    reader.start()
    while reader.is_alive():
        reader.join(timeout=1)
        if not reader.is_alive():
            break
        try:
            phase = (kube.get_pod(namespace, pod).get("status") or {}).get("phase")
        except NotFound:
            phase = "Failed"
        if phase in ENDED:
            reader.join(timeout=1)  # the last lines the pod wrote before it ended
            break
    sys.stdout.flush()
    if errors:
        raise errors[0]
