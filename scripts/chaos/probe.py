"""The probe, loaded into worker processes (`--include=chaos.probe`): it appends one
line per task start and end to $QUESTLINE_CHAOS_PROBE, outside any transaction, to
count the duplicate deliveries that the product absorbed. probe_counts reads it."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any


def _install_probe(path: str) -> None:
    from celery import signals

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(line: str) -> None:
        # One write() per line on an O_APPEND file: lines from many processes never mix.
        os.write(fd, line.encode())

    @signals.task_prerun.connect(weak=False)
    def _started(sender: Any = None, args: Any = None, **_kw: Any) -> None:
        name = getattr(sender, "name", "")
        delivery = getattr(getattr(sender, "request", None), "delivery_info", None) or {}
        if delivery.get("redelivered"):
            write(f"redelivered 0 {os.getpid()}\n")
        if name == "questline.process_sign_in" and args:
            write(f"start {args[0]} {os.getpid()}\n")
        elif name == "questline.drain_outbox":
            write(f"drain-start 0 {os.getpid()}\n")

    @signals.task_postrun.connect(weak=False)
    def _finished(sender: Any = None, args: Any = None, retval: Any = None, **_kw: Any) -> None:
        name = getattr(sender, "name", "")
        if name == "questline.process_sign_in" and args and isinstance(retval, dict):
            outcome = retval.get("outcome", "?").replace(" ", "-")
            write(f"done {args[0]} {outcome}\n")
        elif name == "questline.drain_outbox" and isinstance(retval, dict):
            write(f"drain-done {retval.get('applied', 0)} -\n")


if os.environ.get("QUESTLINE_CHAOS_PROBE"):
    _install_probe(os.environ["QUESTLINE_CHAOS_PROBE"])


def probe_counts(path: Path) -> dict[str, int]:
    starts: collections.Counter[int] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    drains = drained = redelivered = 0
    if path.exists():
        for line in path.read_text().splitlines():
            kind, value, extra = (line.split() + ["", "", ""])[:3]
            if kind == "start":
                starts[int(value)] += 1
            elif kind == "done":
                outcomes[extra] += 1
            elif kind == "drain-done":
                drains += 1
                drained += int(value)
            elif kind == "redelivered":
                redelivered += 1
    return {
        "task_executions": sum(starts.values()),
        "distinct_events": len(starts),
        "repeat_executions": sum(n - 1 for n in starts.values()),
        "absorbed": outcomes["already-processed"],
        "applied_by_task": outcomes["applied"],
        "drain_tasks": drains,
        "applied_by_drain": drained,
        "redelivered": redelivered,
    }
