"""The results: a table with ratios to the ceiling and the Celery floor, and a plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.measure import EndToEnd


def plot(path: Path, backlog: dict[int, float], e2e: list[EndToEnd], ceiling: float,
         floor: float) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    ws = sorted(backlog)
    left.plot(ws, [backlog[w] for w in ws], "o-", label="Questline batched drain")
    left.axhline(ceiling, color="k", ls="--", lw=1, label="ceiling: raw locked update")
    left.axhline(floor, color="r", ls=":", lw=1, label="Celery floor: no-op tasks")
    left.set(xlabel="worker processes", ylabel="sign-ins/s", title="Backlog drain", xticks=ws)
    left.legend(fontsize=7)
    batched = sorted((r for r in e2e if r.mode == "batch"), key=lambda r: r.workers)
    xs = [r.workers for r in batched]
    right.plot(xs, [r.sustained for r in batched], "o-", label="sustained sign-ins/s")
    if batched:
        right.axhline(batched[0].offered, color="k", ls="--", lw=1, label="offered")
    right.set(
        xlabel="worker processes",
        ylabel="sign-ins/s",
        xticks=xs,
        title="End to end (refresh over HTTP)",
    )
    lag = right.twinx()
    lag.plot(xs, [r.lag[2] * 1000 for r in batched], "s--", color="tab:red", label="lag p99")
    lag.set_ylabel("lag p99 (ms)", color="tab:red")
    lag.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    lines = right.get_legend_handles_labels()
    more = lag.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def print_table(
    results: dict[str, Any],
    rows: list[tuple[str, float, str]],
    e2e: list[EndToEnd],
    ceiling: float,
    floor: float,
) -> None:
    """The figures as a Markdown table, each as a fraction of the ceiling and the floor."""
    print()
    print(
        f"Questline benchmark, {results['processes']} processes per side, {os.cpu_count()} cores"
        f"{' (quick)' if results['quick'] else ''}"
    )
    print("| measurement | value | / ceiling | / Celery floor |")
    print("|---|---:|---:|---:|")
    print(f"| (a) ceiling: raw psycopg2 locked update | {ceiling:,.0f} tx/s | 1.00 | |")
    print(
        f"| (b) Celery floor: no-op tasks | {floor:,.0f} tasks/s | {floor / ceiling:.2f} | 1.00 |"
    )
    for name, value, unit in rows:
        label = name if name.startswith("(") else f"(c) {name}"
        print(f"| {label} | {value:,.0f} {unit} | {value / ceiling:.2f} | {value / floor:.2f} |")
    for r in e2e:
        print(
            f"| (d) end to end, {r.mode}, {r.workers} worker proc, offered {r.offered:,.0f}/s "
            f"| {r.sustained:,.0f} sign-ins/s, lag p50/p95/p99 {r.lag[0] * 1000:,.0f}/"
            f"{r.lag[1] * 1000:,.0f}/{r.lag[2] * 1000:,.0f} ms "
            f"| {r.sustained / ceiling:.2f} | {r.sustained / floor:.2f} |"
        )
    if "login" in results:
        print(
            f"| (e) password login vs bare argon2 verify (medians of rounds in turns) | "
            f"{results['login']:,.1f} vs {results['argon2']:,.1f} /s, median ratio "
            f"{results['login_ratio']:.2f} | | |"
        )
        print(
            f"| (e) cached GET /quests vs bare FastAPI endpoint | {results['quests']:,.0f} vs "
            f"{results['bare']:,.0f} req/s = {results['quests'] / results['bare']:.2f} | | |"
        )
