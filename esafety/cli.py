"""`esafety`: one console script; each command group lives in esafety/commands/<name>.py.

A command module exposes `register(subparsers)`, adding its parser(s) with `set_defaults(func=...)`;
`func(args) -> int` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "esafety.commands.run",
    "esafety.commands.policy",
    "esafety.commands.lists",
    "esafety.commands.db",
    "esafety.commands.users",
    "esafety.commands.sensor",
    "esafety.commands.audit",
    "esafety.commands.registrations",
    "esafety.commands.devices",
    "esafety.commands.agent",
    "esafety.commands.directory",
    "esafety.commands.roster",
    "esafety.commands.radius",
)


# The agent runs on every pupil's device within a 50 MB budget: `esafety agent ...` loads only its
# own command, not the server's libraries (SQLAlchemy, FastAPI, mitmproxy) that the others import.
LIGHT_COMMANDS = {"agent": "esafety.commands.agent"}


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esafety", description="School network monitoring and e-safety enforcement")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    light = LIGHT_COMMANDS.get(argv[0]) if argv else None
    args = build_parser((light,) if light else COMMAND_MODULES).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _store_unusable(exc):
            raise
        # A store that is down or not yet migrated: say which and what to do, not a traceback.
        from esafety.config import load_settings

        where = load_settings().database_url.rpartition("@")[2]
        orig = getattr(exc, "orig", None)
        problem = str(orig).strip().splitlines()[0] if orig else str(exc)
        print(f"esafety: the store ({where}) cannot serve this: {problem}", file=sys.stderr)
        if "no such table" in problem or "does not exist" in problem:
            print("  its schema is missing or old: run `esafety db upgrade`", file=sys.stderr)
        return 2


def _store_unusable(exc: Exception) -> bool:
    store_errors = sys.modules.get("sqlalchemy.exc")  # never imported by the light commands
    return store_errors is not None and isinstance(exc, (store_errors.OperationalError, store_errors.ProgrammingError))


if __name__ == "__main__":
    sys.exit(main())
