"""The `questline` command: serve, db upgrade, keys, create-admin, events, replay."""

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
    print(
        f"sign-in {args.event_id} re-enqueued"
        if sent
        else f"sign-in {args.event_id} revived; the broker is down, the sweeper will apply it"
    )
    return 0


def _not_replayable(event_id: int) -> str:
    """Why replay refused an id: there is no such sign-in, or it is already processed."""
    from models import Event, EventType
    from questline.infra import db

    with db.transaction() as session:
        event = session.get(Event, event_id)
        if event is None or event.type != EventType.SIGN_IN:
            return f"no sign-in {event_id}"
    return (
        f"sign-in {event_id} is already processed; it is not an unprocessed sign-in, "
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


def _serve(args: argparse.Namespace) -> int:
    from questline.commands.embedded import serve

    code: int = serve(host=args.host, port=args.port)
    return code


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

    replay = sub.add_parser("replay", help="re-enqueue an unprocessed or dead sign-in")
    replay.add_argument("event_id", type=int, help="the sign-in's id (sign_in_id)")
    replay.set_defaults(func=_replay)

    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
