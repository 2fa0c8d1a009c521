"""The `questline` command: serve, db upgrade, keys, create-admin, api-key, events, replay,
recompute, quests apply/export, prune."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from questline.config import get_settings

NO_PASSWORD = (
    "no terminal to ask for a password: set QUESTLINE_ADMIN_PASSWORD to the admin's password"
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("questline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _db_upgrade(_args: argparse.Namespace) -> int:
    from questline.infra import migrate

    before = migrate.database_revision()
    migrate.upgrade()
    after = migrate.database_revision()
    if before == after:
        print(f"{_safe_url()}: already at the latest migration ({after})")
    else:
        start = before or "an empty schema"
        print(f"{_safe_url()}: upgraded the database from {start} to {after}")
    return 0


def _safe_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(get_settings().sqlalchemy_url).render_as_string(hide_password=True)


def _create_admin(args: argparse.Namespace) -> int:
    from models.users import Role
    from questline.errors import DomainError
    from questline.infra import db
    from questline.users import service as users

    password = os.environ.get("QUESTLINE_ADMIN_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            print(NO_PASSWORD, file=sys.stderr)
            return 2
        try:
            password = getpass.getpass(f"password for {args.name}: ")
        except EOFError:
            print(NO_PASSWORD, file=sys.stderr)
            return 2
    if not 8 <= len(password) <= 128:
        print("password must be 8-128 characters", file=sys.stderr)
        return 2
    from questline.users.repository import USER_NAME_RE

    if not USER_NAME_RE.fullmatch(args.name):
        print("name must be 3-32 characters of A-Z a-z 0-9 _ . -", file=sys.stderr)
        return 2
    try:
        with db.transaction() as session:
            user = users.signup(session, user_name=args.name, password=password, role=Role.ADMIN)
            user_id = user.user_id
    except DomainError as exc:
        print(exc.detail, file=sys.stderr)
        return 1
    print(f"admin {args.name} created with user_id {user_id}")
    return 0


def _events(args: argparse.Namespace) -> int:
    from questline import outbox

    rows = outbox.list_unprocessed(limit=args.limit, dead_only=args.dead)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    s = outbox.stats()
    age = s.oldest_pending_age_seconds
    print(f"pending: {s.pending}  dead: {s.dead}  oldest pending: {age:.1f} s")
    for r in rows:
        print(
            f"{r['sign_in_id']:>10}  user {r['user_id']:<8} {r['state']:<8} "
            f"attempts {r['attempts']}  {r['created_at']}  {r['last_error'] or ''}"
        )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from questline import outbox
    from workers.publish import publisher  # registers the after-commit sender

    # The revival's commit hands its message to the publisher; wait for it to go out.
    failures = publisher.failures
    if not outbox.revive(args.event_id):
        print(_not_replayable(args.event_id), file=sys.stderr)
        return 1
    sent = publisher.flush(timeout=10) and publisher.failures == failures
    what = f"{_input_noun(args.event_id)} {args.event_id}"
    print(
        f"{what} re-enqueued"
        if sent
        else f"{what} revived; the broker is down, the sweeper will apply it"
    )
    return 0


def _recompute(args: argparse.Namespace) -> int:
    from questline.engine import EvaluationError
    from questline.errors import DomainError
    from questline.infra import db
    from questline.quests import recompute

    try:
        with db.transaction() as session:
            users = recompute.users_in_scope(session, user_id=args.user, quest_id=args.quest)
    except DomainError as exc:
        print(exc.detail, file=sys.stderr)
        return 2
    differing = granted = failed = 0
    for user_id in users:
        try:
            with db.transaction() as session:
                rebuilds = recompute.rebuild_user(
                    session, user_id, quest_id=args.quest, apply=args.apply
                )
        except EvaluationError as exc:
            print(f"user {user_id}: cannot rebuild: {exc}", file=sys.stderr)
            failed += 1
            continue
        for r in rebuilds:
            print(f"user {r.user_id} quest {r.quest_id}: {'; '.join(r.changes())}")
            granted += len(r.missing_rewards)
        differing += len(rebuilds)
    checked = f"{len(users)} user{'s' * (len(users) != 1)} checked"
    if not differing:
        print(f"no differences ({checked})")
    elif args.apply:
        print(f"{differing} quest state(s) rewritten, {granted} reward(s) granted ({checked})")
    else:
        print(f"{differing} quest state(s) differ ({checked}); --apply writes them")
    return 1 if failed else 0


def _input_noun(event_id: int) -> str | None:
    """"sign-in" or "event" for a stored input (sign-in or gameplay event), else None."""
    from models import Event, EventType
    from questline.infra import db

    with db.transaction() as session:
        event = session.get(Event, event_id)
        if event is None or event.occurred_at is None:
            return None  # unknown, or a history entry (never an input)
        return "sign-in" if event.type == EventType.SIGN_IN else "event"


def _not_replayable(event_id: int) -> str:
    """Why replay refused an id: there is no such input, or it is already processed."""
    noun = _input_noun(event_id)
    if noun is None:
        return f"no sign-in or event {event_id}"
    return (
        f"{noun} {event_id} is already processed; it is not an unprocessed {noun}, "
        "so there is nothing to replay"
    )


def _keys(_args: argparse.Namespace) -> int:
    from questline import security

    settings = get_settings()
    priv, pub = settings.private_key_path, settings.public_key_path
    if priv.exists() != pub.exists():
        print(f"only one of {priv} and {pub} exists; refusing to replace it", file=sys.stderr)
        return 1
    existed = priv.exists()
    security.ensure_keypair(settings)
    print(f"{'kept' if existed else 'created'} JWT key pair: {priv} (private), {pub} (public)")
    return 0


def _api_key_create(args: argparse.Namespace) -> int:
    from questline.credentials import service as credentials
    from questline.errors import DomainError
    from questline.infra import db

    name = args.name.strip()
    if not 1 <= len(name) <= 100:
        print("name must be 1-100 characters", file=sys.stderr)
        return 2
    try:
        with db.transaction() as session:
            new = credentials.create(session, name=name, scopes=args.scope)
            key_id = new.key.key_id
    except DomainError as exc:
        print(exc.detail, file=sys.stderr)
        return 2
    # The secret alone on stdout (for scripts); what it is on stderr.
    print(
        f"API key {key_id} {name!r} ({', '.join(new.key.scopes)}); shown only now:", file=sys.stderr
    )
    print(new.api_key)
    return 0


def _quests_apply(args: argparse.Namespace) -> int:
    from questline.catalog import as_code
    from questline.errors import DomainError
    from questline.infra import db

    try:
        fmt = as_code.Format(args.format) if args.format else as_code.format_of(args.file)
        with open(args.file, encoding="utf-8") as file:
            document = as_code.load(file.read(), fmt)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"{args.file}: {exc.detail}", file=sys.stderr)
        return 1
    # One transaction for the whole file; a dry run makes every change (so that every
    # check runs) and then rolls them all back.
    session = db.session_factory()()
    try:
        changes = as_code.apply(session, document)
        if args.dry_run:
            session.rollback()
        else:
            session.commit()
    except DomainError as exc:
        session.rollback()
        print(f"{args.file}: {exc.detail}; nothing was changed", file=sys.stderr)
        return 1
    finally:
        session.close()
    for change in changes:
        print(change)
    if not changes:
        print("no changes: the catalog matches the file")
    elif args.dry_run:
        print(f"dry run: {len(changes)} change(s) would be made; nothing was written")
    else:
        print(f"{len(changes)} change(s) applied")
    return 0


def _quests_export(args: argparse.Namespace) -> int:
    from questline.catalog import as_code
    from questline.errors import DomainError
    from questline.infra import db

    try:
        if args.format:
            fmt = as_code.Format(args.format)
        else:
            fmt = as_code.format_of(args.output) if args.output else as_code.Format.YAML
        with db.transaction() as session:
            text = as_code.dump(as_code.export(session), fmt)
    except DomainError as exc:
        print(exc.detail, file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _prune(_args: argparse.Namespace) -> int:
    from questline import retention

    days = get_settings().event_retention_days
    pruned = retention.prune()
    print(
        f"pruned {pruned.refresh_tokens} refresh tokens, {pruned.idempotency_keys} "
        f"idempotency keys, {pruned.webhook_deliveries} webhook deliveries and "
        f"{pruned.events} events"
    )
    if days is None:
        print("events are kept forever: QUESTLINE_EVENT_RETENTION_DAYS is not set")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from questline.commands.embedded import serve

    code: int = serve(host=args.host, port=args.port)
    return code


def _grpc(args: argparse.Namespace) -> int:
    import logging

    from rpc.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    metrics_port = None if args.metrics_port == 0 else args.metrics_port
    serve(args.port, metrics_port=metrics_port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="questline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"questline {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the all-in-one app and a worker on SQLite",
        description="Run the all-in-one app and a supervised worker on SQLite files in "
        "the data dir (QUESTLINE_DATA_DIR), migrating and creating keys first.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    serve.set_defaults(func=_serve)

    settings = get_settings()
    grpc_cmd = sub.add_parser(
        "grpc",
        help="the gRPC server (questline.v1.Catalog and questline.v1.Events)",
        description="Serve the catalog and event ingestion over gRPC, with health "
        "(grpc.health.v1) and server reflection; /metrics on a separate HTTP port. "
        "SIGTERM lets calls in flight finish.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    grpc_cmd.add_argument(
        "--port", type=int, default=settings.grpc_port, help="gRPC port (QUESTLINE_GRPC_PORT)"
    )
    grpc_cmd.add_argument(
        "--metrics-port",
        type=int,
        default=settings.grpc_metrics_port or 0,
        help="HTTP port of /metrics, 0: none (QUESTLINE_GRPC_METRICS_PORT)",
    )
    grpc_cmd.set_defaults(func=_grpc)

    db_cmd = sub.add_parser("db", help="database commands")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations (seed data included)").set_defaults(
        func=_db_upgrade
    )

    sub.add_parser(
        "keys", help="create the JWT signing key pair (QUESTLINE_JWT_*_KEY_FILE) unless it exists"
    ).set_defaults(func=_keys)

    admin = sub.add_parser(
        "create-admin",
        help="create an admin user",
        description="Create an admin user. The password comes from QUESTLINE_ADMIN_PASSWORD, "
        "or from a prompt when standard input is a terminal.",
    )
    admin.add_argument("name", help="3-32 characters of A-Z a-z 0-9 _ . -")
    admin.set_defaults(func=_create_admin)

    events = sub.add_parser("events", help="list unprocessed and dead-lettered sign-ins")
    which = events.add_mutually_exclusive_group()
    which.add_argument(
        "--pending", action="store_true", help="(the default) every unprocessed sign-in"
    )
    which.add_argument("--dead", action="store_true", help="the dead-lettered ones alone")
    events.add_argument("--limit", type=int, default=100, help="at most this many")
    events.add_argument("--json", action="store_true", help="print JSON")
    events.set_defaults(func=_events)

    api_key = sub.add_parser("api-key", help="API keys for game servers")
    api_key_sub = api_key.add_subparsers(dest="api_key_command", required=True)
    create_key = api_key_sub.add_parser(
        "create", help="create a key and print its secret (shown only this once)"
    )
    create_key.add_argument("name")
    create_key.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        help="events:write or events:backfill (repeat for several)",
    )
    create_key.set_defaults(func=_api_key_create)

    replay = sub.add_parser("replay", help="re-enqueue an unprocessed or dead sign-in")
    replay.add_argument("event_id", type=int, help="the sign-in's id (sign_in_id)")
    replay.set_defaults(func=_replay)

    rebuild = sub.add_parser(
        "recompute",
        help="rebuild quest progress from applied inputs with today's definitions",
        description="Rebuild quest progress from the applied inputs with today's quest "
        "definitions and print, per user and quest, what differs. --apply writes the "
        "rebuilt progress and grants rewards the history earns but the user lacks; "
        "nothing is ever revoked.",
    )
    which = rebuild.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", type=int, metavar="ID", help="one user")
    which.add_argument("--quest", type=int, metavar="ID", help="one quest, every user")
    which.add_argument("--all", action="store_true", help="every user and active quest")
    rebuild.add_argument("--apply", action="store_true", help="write the rebuilt state")
    rebuild.set_defaults(func=_recompute)

    quests = sub.add_parser("quests", help="the catalog as code (YAML or JSON)")
    quests_sub = quests.add_subparsers(dest="quests_command", required=True)
    apply = quests_sub.add_parser(
        "apply",
        help="make the catalog match a file",
        description="Create and update rewards and quests (keyed by name) to match FILE, "
        "in one transaction, with the same checks as the HTTP API. Nothing is deleted: "
        "active quests the file leaves out are deactivated; rewards it leaves out stay.",
    )
    apply.add_argument("file", metavar="FILE", help="a .yaml, .yml or .json catalog file")
    apply.add_argument("--dry-run", action="store_true", help="print the changes, write none")
    apply.add_argument("--format", choices=["yaml", "json"], help="instead of the extension's")
    apply.set_defaults(func=_quests_apply)
    export = quests_sub.add_parser(
        "export", help="print the catalog in the form `quests apply` reads"
    )
    export.add_argument("--format", choices=["yaml", "json"], help="default: yaml")
    export.add_argument("-o", "--output", metavar="FILE", help="write FILE (format by extension)")
    export.set_defaults(func=_quests_export)

    sub.add_parser(
        "prune",
        help="delete rows past their retention now (the workers also do it on a timer)",
        description="Delete refresh tokens and claim idempotency keys past their retention "
        "and, when QUESTLINE_EVENT_RETENTION_DAYS is set, old events (inputs an active "
        "quest still counts are kept). Every worker does the same every "
        "QUESTLINE_PRUNE_INTERVAL_SECONDS.",
    ).set_defaults(func=_prune)

    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
