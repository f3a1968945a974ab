"""The ``firewatch`` command: run the stack, drive its simulators."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import httpx

from firewatch.bench import command as bench_command
from firewatch.logs import configure_logging, progress
from firewatch.profiles import ProfileError


def _up(args: argparse.Namespace) -> int:
    from firewatch.settings import Settings
    from firewatch.stack import run_stack

    overrides = {
        "port": args.port,
        "host": args.host,
        "data_dir": args.data_dir,
        "site_file": args.site,
    }
    if args.no_simulate:
        overrides["simulate"] = False
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        asyncio.run(run_stack(settings))
    except ProfileError as exc:
        print(f"firewatch: {exc}", file=sys.stderr)
        return 2
    return 0


def _service(args: argparse.Namespace) -> int:
    """One part of the system in this process, configured by FIREWATCH_* only."""
    from firewatch import services
    from firewatch.settings import Settings

    settings = Settings()
    run = {
        "gateway": lambda: services.run_gateway(settings, args.gateway_ids),
        "ingest": lambda: services.run_ingest(settings),
        "alerts": lambda: services.run_alerts(settings),
        "web": lambda: services.run_web(settings),
        "broker": lambda: services.run_broker(settings),
    }[args.command]
    try:
        asyncio.run(run())
    except ProfileError as exc:
        print(f"firewatch: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve_simulators(args: argparse.Namespace) -> int:
    from simulators.serve import serve

    try:
        asyncio.run(serve(args.site, args.ready_file, args.mqtt_url))
    except ProfileError as exc:
        print(f"firewatch: {exc}", file=sys.stderr)
        return 2
    return 0


#: firewatch.accounts.Role's values, spelled out so that parsing the command line stays light
ROLES = ["admin", "viewer", "staff", "tester"]


class LoginRefused(Exception):
    """The stack did not accept the user name and password."""


def _api(port: int, host: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://{host}:{port}", timeout=10)


def _login(api: httpx.Client, user: str) -> None:
    """Log ``api`` in as ``user`` (password: $FIREWATCH_PASSWORD, else the demo password, which
    is what the demo tester account has)."""
    from firewatch.settings import Settings

    password = os.environ.get("FIREWATCH_PASSWORD") or Settings().demo_password
    reply = api.post("/api/auth/token", data={"username": user, "password": password})
    if reply.status_code != 200:
        raise LoginRefused(f"login as {user!r} refused: {_detail(reply)}")
    api.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"


def _detail(reply: httpx.Response) -> str:
    """What the stack said was wrong: its ``detail``, pydantic's list of errors made one line."""
    try:
        detail = reply.json().get("detail", reply.text)
    except ValueError:
        return reply.text or reply.reason_phrase
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, e.get('loc', [])[1:]))}: {e.get('msg')}"
            for e in detail
            if isinstance(e, dict)
        )
    return str(detail)


def _test_mode(api: httpx.Client, device_id: str, scenario: str, minutes: int) -> httpx.Response:
    """Put the device in test mode (测试) first, so that its alarms wake nobody (see
    docs/shielding.md); logged under the account the command logged in as."""
    reply = api.post(
        f"/api/devices/{device_id}/mode",
        json={
            "mode": "test",
            "minutes": minutes,
            "reason": "other",
            "note": f"模拟器测试场景 {scenario}（firewatch simulate）",
        },
    )
    if reply.status_code < 400:
        print(f"{device_id}: test mode for {minutes} min (alarms recorded, nobody notified)")
    return reply


def _simulate(args: argparse.Namespace) -> int:
    url = f"http://{args.host}:{args.port}"
    try:
        with _api(args.port, args.host) as api:
            _login(api, args.user)
            if args.action == "list":
                reply = api.get("/api/simulator/devices")
            else:
                if args.test_mode:
                    reply = _test_mode(api, args.device_id, args.scenario, args.minutes)
                    if reply.status_code >= 400:
                        print(f"firewatch: test mode refused: {_detail(reply)}", file=sys.stderr)
                        return 1
                reply = api.post(
                    f"/api/simulator/devices/{args.device_id}/scenario",
                    json={"scenario": args.scenario},
                )
                if reply.status_code == 404:
                    known = api.get("/api/simulator/devices")
                    if known.status_code == 200:
                        ids = ", ".join(d["device_id"] for d in known.json())
                        print(
                            f"firewatch: no simulated device {args.device_id!r}; "
                            f"the stack at {url} simulates: {ids}",
                            file=sys.stderr,
                        )
                        return 1
    except httpx.TransportError:
        print(
            f"firewatch: no Firewatch answers at {url} — is `firewatch up` running? "
            "give --port (and --host) of the stack",
            file=sys.stderr,
        )
        return 1
    except LoginRefused as exc:
        print(
            f"firewatch: {exc} (give --user, and the password in FIREWATCH_PASSWORD)",
            file=sys.stderr,
        )
        return 1
    if reply.status_code >= 400:
        print(f"firewatch: {_detail(reply)}", file=sys.stderr)
        return 1
    if args.action == "list":
        for device in reply.json():
            print(
                f"{device['device_id']:<16} {device['scenario']:<24} "
                f"{', '.join(device['scenarios'])}"
            )
    else:
        print(f"{args.device_id}: scenario {args.scenario} started")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from firewatch import backup
    from firewatch.settings import Settings

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    try:
        if args.command == "backup":
            manifest = backup.backup(settings, args.dest, progress)
            print(args.dest)
        else:
            manifest = backup.restore(settings, args.source, args.force, progress)
            print(settings.data_dir)
    except backup.BackupError as exc:
        print(f"firewatch: {exc}", file=sys.stderr)
        return 1
    for name, what in manifest.files.items():
        progress(f"  {name}: {what}")
    return 0


def _user(args: argparse.Namespace) -> int:
    """Console accounts, straight in the database (works while the stack is down)."""
    import getpass

    from firewatch import accounts, db
    from firewatch.settings import Settings

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))

    def password() -> str:
        return os.environ.get("FIREWATCH_PASSWORD") or getpass.getpass("password: ")

    async def listing(sessions) -> str:
        return (
            "\n".join(
                f"{u.username:<30} {u.role:<8} {u.institution_id or '-':<28} "
                f"{'disabled' if u.disabled else 'enabled':<9}{' demo' if u.demo else ''}"
                for u in await accounts.list_users(sessions)
            )
            or "no accounts"
        )

    async def act(sessions) -> str:
        match args.action:
            case "remove-demo":
                removed = await accounts.remove_demo_accounts(sessions)
                return f"removed {len(removed)} demo accounts; they will not be created again"
            case "add":
                await accounts.add_user(
                    sessions,
                    args.username,
                    password(),
                    accounts.Role(args.role),
                    args.name or args.username,
                    args.institution,
                )
                return f"added {args.username} ({args.role})"
            case "disable" | "enable":
                await accounts.set_disabled(sessions, args.username, args.action == "disable")
                return f"{args.action}d {args.username}"
            case "passwd":
                await accounts.set_password(sessions, args.username, password())
                return f"new password for {args.username}"
            case "role":
                await accounts.set_role(
                    sessions, args.username, accounts.Role(args.role), args.institution
                )
                return f"{args.username} is now {args.role}"
            case _:
                return await listing(sessions)

    async def run() -> str:
        engine = db.create_engine(settings.effective_database_url)
        try:
            await db.create_schema(engine)
            return await act(db.sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(run()))
    except ValueError as exc:
        print(f"firewatch: {exc}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="firewatch", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--child",
        metavar="NAME",
        help="run as the child NAME of `firewatch up`: NAME in every log line, and stop "
        "when the parent goes (its end of stdin closes)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole system (embedded broker and stores by default)")
    up.add_argument("--port", type=int, help="web app port (default 8000)")
    up.add_argument("--host", help="web app address (default 127.0.0.1)")
    up.add_argument("--data-dir", type=Path, help="where all state is kept")
    up.add_argument("--site", type=Path, help="site file (default: the demo county)")
    up.add_argument("--no-simulate", action="store_true", help="run no device simulators")
    up.set_defaults(func=_up)

    for name, summary in [
        ("gateway", "poll devices and publish, as its own service (production stack)"),
        ("ingest", "readings into the time-series store, as its own service (replicas share)"),
        ("alerts", "alarms, hazard ledger and notices, as its own service"),
        ("web", "the JSON API and the console, as its own service"),
        ("broker", "the embedded MQTT broker (amqtt) alone, as `firewatch up` runs it"),
    ]:
        service = sub.add_parser(
            name, help=summary, description=f"{summary}; configured by FIREWATCH_* variables."
        )
        service.set_defaults(func=_service, gateway_ids=[])
    sub.choices["gateway"].add_argument(
        "--gateway",
        dest="gateway_ids",
        action="append",
        metavar="ID",
        help="a gateway of the site file to run (repeat for several; default: all)",
    )

    sim = sub.add_parser("simulate", help="drive the simulators of a running stack")
    sim_sub = sim.add_subparsers(dest="action", required=True)
    trigger = sim_sub.add_parser("trigger", help="start a scenario on a simulated device")
    trigger.add_argument("device_id")
    trigger.add_argument("scenario", help="e.g. normal, button-press, gas-leak, overheat, offline")
    trigger.add_argument(
        "--test-mode",
        action="store_true",
        help="put the device in test mode (测试) first: its alarms are recorded, nobody notified",
    )
    trigger.add_argument(
        "--minutes", type=int, default=30, help="how long the test mode lasts (default 30)"
    )
    listing = sim_sub.add_parser("list", help="simulated devices and their scenarios")
    for action in (trigger, listing):
        action.add_argument("--port", type=int, default=8000, help="the stack's web port")
        action.add_argument("--host", default="127.0.0.1")
        action.add_argument(
            "--user",
            default="tester",
            help="account to log in as (default: the demo tester); "
            "password from FIREWATCH_PASSWORD, else the demo password",
        )
        action.set_defaults(func=_simulate)
    serve = sim_sub.add_parser("serve", help="run a site's simulated devices in this process")
    serve.add_argument("--site", type=Path, required=True, help="site file")
    serve.add_argument("--ready-file", type=Path, help="write endpoint ports here when ready")
    serve.add_argument("--mqtt-url", help="broker for the simulated MQTT devices")
    serve.set_defaults(func=_serve_simulators)

    user = sub.add_parser("user", help="console accounts (production: add real ones, remove demo)")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser(
        "add", help="add an account; password from FIREWATCH_PASSWORD or asked for"
    )
    add.add_argument("--name", help="display name shown on the console")
    role = user_sub.add_parser("role", help="give an account another role (and institution)")
    for action in (add, role):
        action.add_argument("--role", required=True, choices=ROLES)
        action.add_argument("--institution", help="the institution of duty staff (role staff)")
    named = [add, role] + [
        user_sub.add_parser(name, help=summary)
        for name, summary in [
            ("disable", "refuse an account's logins; its tokens stop working at once"),
            ("enable", "let a disabled account log in again"),
            ("passwd", "a new password (from FIREWATCH_PASSWORD or asked for)"),
        ]
    ]
    for action in named:
        action.add_argument("username")
    others = [
        user_sub.add_parser("remove-demo", help="delete the demo accounts, for good"),
        user_sub.add_parser("list", help="every account, its role and whether enabled"),
    ]
    for action in named + others:
        action.add_argument("--data-dir", type=Path, help="the stack's data dir (SQLite)")
        action.set_defaults(func=_user)

    back = sub.add_parser(
        "backup",
        help="copy the databases into a new directory, while the "
        "stack runs (SQLite: online backup; PostgreSQL: pg_dump)",
    )
    back.add_argument("dest", type=Path, help="a new (or empty) directory for the backup")
    restore = sub.add_parser("restore", help="put a backup into a fresh data dir (or database)")
    restore.add_argument("source", type=Path, help="a directory made by `firewatch backup`")
    restore.add_argument(
        "--force",
        action="store_true",
        help="replace a data dir (or database) that has data; stop the stack first",
    )
    for action in (back, restore):
        action.add_argument("--data-dir", type=Path, help="the stack's data dir")
        action.set_defaults(func=_backup)

    bench_command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from firewatch.settings import Settings, SettingsError

    args = parser().parse_args(argv)
    try:
        configure_logging(
            Settings().log_format,
            args.verbose,
            quiet=args.func in (_simulate, _user, _backup, bench_command.run),
            process=args.child,
        )
        if args.child:
            from firewatch.children import stop_when_parent_goes

            stop_when_parent_goes()
        return args.func(args)
    except SettingsError as exc:  # one line naming the variable, not a traceback
        print(f"firewatch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
