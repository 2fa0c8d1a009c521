"""The options, the order of the measurements and the exactness verdict."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
from bench import __doc__ as ABOUT
from bench.gameplay import QUESTS, measure_gameplay_drain, measure_ingestion
from bench.live import measure_live
from bench.measure import (
    EndToEnd,
    measure_backlog,
    measure_ceiling,
    measure_celery_floor,
    measure_end_to_end,
    measure_login,
    measure_quests,
)
from bench.report import plot, print_table
from bench.system import Bench

PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
DATABASE = os.environ.get("QUESTLINE_BENCH_DB_NAME", "questline_bench")
RABBITMQ_URL = f"amqp://guest:guest@127.0.0.1:5672/{DATABASE}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(ABOUT or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (~2-3 minutes)")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="processes for the ceiling, the floor, the API and the login "
        "comparison (default 2, the cores of the reference machine)",
    )
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to sweep")
    parser.add_argument("--rate", type=float, default=1200, help="offered refresh sign-ins/s")
    parser.add_argument("--events", type=int, help="backlog size (default 50,000; quick 10,000)")
    parser.add_argument("--database-url", help="a PostgreSQL URL to use (it is wiped)")
    parser.add_argument(
        "--pg-server",
        default=PG_SERVER,
        help=f"where to create the {DATABASE} database ($QUESTLINE_BENCH_DB_NAME names another)",
    )
    parser.add_argument("--redis-url", help="a Redis db to use (it is flushed)")
    parser.add_argument("--streams", type=int, default=1000, help="(i) open live streams")
    parser.add_argument(
        "--live-rate",
        type=float,
        default=300,
        help="(i) offered refresh sign-ins/s of the streaming players (default 300)",
    )
    parser.add_argument(
        "--rabbitmq-url",
        default=RABBITMQ_URL,
        help="the RabbitMQ virtual host for the backlog drain on RabbitMQ (created when "
        f"missing, its queues emptied; default {RABBITMQ_URL})",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of parts to skip: a,b,c,d,e,f,g,h,i; rabbitmq skips (c) on RabbitMQ",
    )
    parser.add_argument("--plot", type=Path, default=harness.ROOT / "docs" / "performance.png")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.database_url:
        from sqlalchemy.engine import make_url

        harness.scratch_database(make_url(args.database_url).database or "")
    else:
        harness.scratch_database(DATABASE)
    return args


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Run:
    """The measurements of one run, as they come in."""

    b: Bench
    args: argparse.Namespace
    ceiling: float = float("nan")
    floor: float = float("nan")
    rows: list[tuple[str, float, str]] = field(default_factory=list)
    e2e: list[EndToEnd] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    @property
    def skip(self) -> set[str]:
        return set(self.args.skip.split(","))

    @property
    def workers(self) -> list[int]:
        return [int(w) for w in self.args.workers.split(",")]

    @property
    def events(self) -> int:
        return int(self.args.events or (10_000 if self.quick else 50_000))

    @property
    def seconds(self) -> float:
        return 4.0 if self.quick else 15.0

    def measure_all(self) -> None:
        b = self.b
        self.results.update(processes=b.processes, quick=self.quick, events=self.events)
        if "a" not in self.skip:
            self.ceiling = measure_ceiling(b, self.seconds)
            say(
                f"(a) ceiling, raw locked update, {b.processes} processes: {self.ceiling:,.0f} tx/s"
            )
        if "b" not in self.skip:
            self.floor = measure_celery_floor(b, 4000 if self.quick else 20_000)
            say(
                f"(b) Celery floor, no-op tasks, {b.processes} processes: {self.floor:,.0f} tasks/s"
            )
        self.results.update(ceiling=self.ceiling, celery_floor=self.floor)
        if "c" not in self.skip:
            self.backlog()
        if "d" not in self.skip:
            self.end_to_end()
        if "e" not in self.skip:
            self.api_paths()
        if "f" not in self.skip:
            self.ingestion()
        if "g" not in self.skip:
            self.gameplay()
        if "h" not in self.skip:
            self.grpc()
        if "i" not in self.skip:
            self.live()

    def grpc(self) -> None:
        from bench.grpc_rows import measure_grpc_ingestion, measure_grpc_source_drain

        n_batches = 400 if self.quick else 2000
        connections = 4 * self.b.processes
        r = measure_grpc_ingestion(self.b, n_batches, connections)
        ratio = r["grpc"] / r["http"]
        say(
            f"(h) ingestion, batches of 100, {self.b.processes} server proc, {connections} "
            f"clients: RecordEvents over gRPC {r['grpc']:,.0f} events/s vs POST /events "
            f"{r['http']:,.0f} events/s = {ratio:.2f} (target >= 1.5; runs gRPC "
            f"{', '.join(f'{x:,.0f}' for x in r['grpc_runs'])}, HTTP "
            f"{', '.join(f'{x:,.0f}' for x in r['http_runs'])}; per round "
            f"{', '.join(f'{x:.2f}' for x in r['round_ratios'])}), "
            f"{'exact' if not r['problem'] else 'NOT EXACT: ' + r['problem']}"
        )
        if r["problem"]:
            self.failures.append(f"gRPC ingestion: {r['problem']}")
        self.rows.append(("(h) ingestion, RecordEvents, batches of 100", r["grpc"], "events/s"))
        self.rows.append(("(h) ingestion, POST /events, same batches", r["http"], "events/s"))
        self.results["grpc_ingestion"] = {**r, "ratio": ratio}

        d = measure_grpc_source_drain(self.b, self.events)
        say(
            f"(h) gameplay drain in one process, batches of 200 taken in turn, "
            f"{d['events']:,} inputs: per event {d['cost_us']['grpc']:,.0f} us with the gRPC "
            f"catalog source vs {d['cost_us']['database']:,.0f} us with the database source = "
            f"{d['overhead'] * 100:+.1f}% (target < 5%; {d['list_quests_calls']} ListQuests "
            f"calls), {'exact' if not d['problem'] else 'NOT EXACT: ' + d['problem']}"
        )
        if d["problem"]:
            self.failures.append(f"gRPC source drain: {d['problem']}")
        self.rows.append(("(h) gameplay drain, gRPC catalog source, 1 proc", d["grpc"], "inputs/s"))
        self.rows.append(
            ("(h) gameplay drain, database catalog source, 1 proc", d["database"], "inputs/s")
        )
        self.results["grpc_source_drain"] = d

    def live(self) -> None:
        n, w = self.args.streams, self.b.processes
        r = measure_live(self.b, n, self.args.live_rate, self.seconds * 2, w)
        say(
            f"(i) live streams, {n:,} open on 1 API process: RSS {r['rss_before_mib']:.0f} -> "
            f"{r['rss_after_mib']:.0f} MiB ({r['rss_per_stream_kib']:.1f} KiB per stream); "
            f"idle CPU {r['idle_cpu_seconds']:.2f} s over {r['idle_seconds']:.0f} s "
            f"({r['idle_cpu_percent']:.1f} % of a core, {r['heartbeats_in_idle']:,} "
            f"heartbeats)"
        )
        say(
            f"(i) under load, offered {r['offered']:,.0f} sign-ins/s (sustained "
            f"{r['sustained']:,.0f}/s, {w} worker proc): sign-in commit -> its SSE message "
            f"p50/p99 {r['sign_in_delay_p50_ms']:,.0f}/{r['sign_in_delay_p99_ms']:,.0f} ms "
            f"({r['sign_in_messages']:,} of {r['sign_ins']:,}); -> its quest_progress "
            f"message p50/p99 {r['progress_delay_p50_ms']:,.0f}/"
            f"{r['progress_delay_p99_ms']:,.0f} ms ({r['progress_messages']:,}); sign-in "
            f"applied by a worker p50/p99 {r['applied_lag_p50_ms']:,.0f}/"
            f"{r['applied_lag_p99_ms']:,.0f} ms; stream API CPU "
            f"{r['stream_api_cpu_seconds_under_load']:.1f} s; {r['holds']:,.0f} holds, "
            f"mean {r['hold_mean_ms']:,.0f} ms"
        )
        if r["sign_in_messages"] != r["sign_ins"] or r["failed"]:
            self.failures.append(
                f"live: {r['sign_in_messages']} sign-in messages for {r['sign_ins']} "
                f"sign-ins, {r['failed']} failed"
            )
        self.rows.append(
            (f"(i) RSS per idle stream, {n:,} streams", r["rss_per_stream_kib"], "KiB")
        )
        self.rows.append(
            (
                f"(i) sign-in -> SSE message p99, {r['offered']:,.0f}/s",
                r["sign_in_delay_p99_ms"],
                "ms",
            )
        )
        self.results["live"] = r

    def ingestion(self) -> None:
        n_batches = 400 if self.quick else 2000
        connections = 4 * self.b.processes  # as (e); fewer left one uvicorn process idle
        r = measure_ingestion(self.b, n_batches, connections)
        ratio = r["http"] / r["raw"]
        say(
            f"(f) ingestion, POST /events batches of 100, {self.b.processes} API proc, "
            f"{connections} clients: {r['http']:,.0f} events/s vs raw psycopg2 multi-row "
            f"INSERT + COMMIT per batch, {self.b.processes} proc: {r['raw']:,.0f} events/s "
            f"(faster of {r['raw_runs'][0]:,.0f} before and {r['raw_runs'][1]:,.0f} after) "
            f"= {ratio:.2f} (target >= 0.5), "
            f"{'exact' if not r['problem'] else 'NOT EXACT: ' + r['problem']}"
        )
        if r["problem"]:
            self.failures.append(f"ingestion: {r['problem']}")
        self.rows.append(("(f) ingestion, POST /events, batches of 100", r["http"], "events/s"))
        self.rows.append(("(f) ingestion, raw multi-row INSERT per batch", r["raw"], "events/s"))
        self.results["ingestion"] = {**r, "ratio": ratio}

    def gameplay(self) -> None:
        w = self.b.processes
        r = measure_gameplay_drain(self.b, self.events, w)
        to_sign_ins = r["gameplay"] / r["sign_ins"]
        to_ceiling = r["gameplay"] / self.ceiling
        say(
            f"(g) backlog drain, {w} processes, {r['events']:,} inputs: gameplay events with "
            f"{len(QUESTS)} quests {r['gameplay']:,.0f}/s "
            f"({r['history_per_event']:.1f} history rows per event) vs sign-ins with the seed "
            f"quest {r['sign_ins']:,.0f}/s = {to_sign_ins:.2f} (target >= 0.5); "
            f"/ ceiling {to_ceiling:.2f}; "
            f"{'exact' if not r['problem'] else 'NOT EXACT: ' + r['problem']}"
        )
        if r["problem"]:
            self.failures.append(f"gameplay drain: {r['problem']}")
        self.rows.append(
            (f"(g) backlog drain, sign-ins, seed quest, {w} proc", r["sign_ins"], "inputs/s")
        )
        self.rows.append(
            (
                f"(g) backlog drain, gameplay, {len(QUESTS)} quests, {w} proc",
                r["gameplay"],
                "inputs/s",
            )
        )
        self.results["gameplay"] = {**r, "to_sign_ins": to_sign_ins, "to_ceiling": to_ceiling}

    def backlog(self) -> None:
        b, events, failures, rows = self.b, self.events, self.failures, self.rows
        backlog: dict[int, float] = {}
        for w in self.workers:
            rate, problem = measure_backlog(b, events, w, naive=False)
            backlog[w] = rate
            say(
                f"(c) backlog drain, batched, {w} processes: {rate:,.0f} sign-ins/s "
                f"{'exact' if not problem else 'NOT EXACT: ' + problem}"
            )
            if problem:
                failures.append(f"backlog {w}: {problem}")
            rows.append((f"backlog drain, batched, {w} proc", rate, "sign-ins/s"))
        naive_events = max(1000, events // 10)
        rate, problem = measure_backlog(b, naive_events, b.processes, naive=True)
        say(
            f"(c) backlog drain, one task per sign-in, {b.processes} processes: "
            f"{rate:,.0f} sign-ins/s {'exact' if not problem else 'NOT EXACT: ' + problem}"
        )
        if problem:
            failures.append(f"naive backlog: {problem}")
        rows.append(
            (f"backlog drain, one task per sign-in, {b.processes} proc", rate, "sign-ins/s")
        )
        self.results["backlog"] = backlog
        self.results["backlog_naive"] = rate
        if "rabbitmq" not in self.skip:
            self.backlog_on_rabbitmq()

    def backlog_on_rabbitmq(self) -> None:
        """(c) again with RabbitMQ as the broker (quorum queues, publisher confirms),
        on a virtual host of the run's own on the machine's RabbitMQ."""
        b, events, url = self.b, self.events, self.args.rabbitmq_url
        try:
            harness.ensure_vhost(url)
            from workers.broker import QUEUE_NAMES

            harness.purge_queues(url, QUEUE_NAMES)
        except harness.BrokerUnavailable as exc:
            self.failures.append(f"backlog on RabbitMQ: {exc}")
            say(f"(c) backlog drain on RabbitMQ: not measured: {exc}")
            return
        backlog: dict[int, float] = {}
        for w in self.workers:
            rate, problem = measure_backlog(b, events, w, naive=False, rabbitmq_url=url)
            backlog[w] = rate
            say(
                f"(c) backlog drain, batched, {w} processes, RabbitMQ: {rate:,.0f} sign-ins/s "
                f"(Redis {self.results['backlog'][w]:,.0f}) "
                f"{'exact' if not problem else 'NOT EXACT: ' + problem}"
            )
            if problem:
                self.failures.append(f"backlog {w} on RabbitMQ: {problem}")
            self.rows.append((f"backlog drain, batched, {w} proc, RabbitMQ", rate, "sign-ins/s"))
        self.results["backlog_rabbitmq"] = backlog

    def end_to_end(self) -> None:
        b = self.b
        runs = [(w, "batch") for w in self.workers] + [(b.processes, "per_event")]
        for w, mode in runs:
            r = measure_end_to_end(b, w, self.args.rate, 8.0 if self.quick else 20.0, mode=mode)
            self.e2e.append(r)
            say(
                f"(d) end to end, {mode}, {w} worker proc: offered {r.offered:,.0f}/s, "
                f"sustained {r.sustained:,.0f}/s, lag p50/p95/p99 "
                f"{r.lag[0] * 1000:,.0f}/{r.lag[1] * 1000:,.0f}/{r.lag[2] * 1000:,.0f} ms, "
                f"HTTP p99 {r.http_p99 * 1000:,.0f} ms, missed {r.missed}, failed "
                f"{r.failed}, {'exact' if not r.exact else 'NOT EXACT: ' + r.exact}"
            )
            if r.exact:
                self.failures.append(f"end to end {mode} {w}: {r.exact}")
        self.results["end_to_end"] = [r.__dict__ for r in self.e2e]
        best = max((r for r in self.e2e if r.mode == "batch"), key=lambda r: r.sustained)
        # The ceiling again, right after: the shared machine's speed moves between (a)
        # and here, and the faster of the two ceilings is the one to compare against.
        after = measure_ceiling(b, self.seconds) if "a" not in self.skip else float("nan")
        ceiling = max(self.ceiling, after)
        ratio = best.sustained / ceiling
        say(
            f"(d) end to end / ceiling (a): best sustained {best.sustained:,.0f}/s / "
            f"{ceiling:,.0f} tx/s (the faster of {self.ceiling:,.0f} before and {after:,.0f} "
            f"after) = {ratio:.2f} (target >= 0.30: {_met(ratio >= 0.30)}; "
            f"its lag p99 {best.lag[2] * 1000:,.0f} ms at {best.offered:,.0f}/s offered)"
        )
        self.results["end_to_end_to_ceiling"] = ratio
        self.results["ceiling_after_end_to_end"] = after

    def api_paths(self) -> None:
        b, secs = self.b, self.seconds
        logins = measure_login(b, secs)
        login_failed = logins.failed
        login = statistics.median(r[0] for r in logins.rounds)
        argon = statistics.median(r[1] for r in logins.rounds)
        rounds = ", ".join(f"{lg:,.1f}/{v:,.1f} ({lg / v:.2f})" for lg, v in logins.rounds)
        say(
            f"(e) password login vs bare argon2 verify, /s in turns: {rounds}; median ratio "
            f"{logins.ratio:.2f}, target >= 0.85: {_met(logins.ratio >= 0.85)}; "
            f"failed {login_failed}"
        )
        quests, bare, quests_failed = measure_quests(b, secs)
        say(
            f"(e) cached GET /quests {quests:,.0f}/s vs bare endpoint {bare:,.0f}/s "
            f"({quests / bare:.2f}, target >= 0.7: {_met(quests / bare >= 0.7)}); "
            f"failed {quests_failed}"
        )
        if login_failed or quests_failed:
            self.failures.append(f"API errors: login {login_failed}, quests {quests_failed}")
        self.results.update(
            login=login, argon2=argon, login_ratio=logins.ratio, quests=quests, bare=bare
        )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="questline-bench-"))
    redis_server = None if args.redis_url else harness.RedisServer(data_dir).start()
    try:
        redis_url = args.redis_url or redis_server.url  # type: ignore[union-attr]
        database_url = args.database_url or harness.recreate_database(args.pg_server, DATABASE)
        b = Bench(database_url, redis_url, data_dir, args.processes, args.quick)
        b.env = {
            "QUESTLINE_DATABASE_URL": database_url,
            "QUESTLINE_REDIS_URL": redis_url,
            "QUESTLINE_DATA_DIR": str(data_dir),
            # The load comes from one address, fast: the auth limits are not measured.
            "QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT": "1000000",
            "QUESTLINE_SIGNUPS_PER_CLIENT_PER_HOUR": "1000000",
            "QUESTLINE_SIGN_INS_PER_USER_PER_MINUTE": "1000000",
            "QUESTLINE_EVENTS_PER_USER_PER_MINUTE": "1000000",
        }
        os.environ.update(b.env)  # this process publishes tasks and mints tokens too
        from questline.infra import migrate

        migrate.upgrade(database_url)
        run = Run(b, args)
        run.measure_all()
    finally:
        if redis_server is not None:
            redis_server.stop()

    print_table(run.results, run.rows, run.e2e, run.ceiling, run.floor)
    if "c" not in run.skip and "d" not in run.skip:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(args.plot, run.results["backlog"], run.e2e, run.ceiling, run.floor)
        print(f"\nplot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(run.results, indent=2, default=str))
    if run.failures:
        print("\nEXACTNESS OR ERRORS:\n  " + "\n  ".join(run.failures))
        return 1
    return 0
