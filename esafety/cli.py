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
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esafety", description="School network monitoring and e-safety enforcement")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (OperationalError, ProgrammingError) as exc:
        # A store that is down or not yet migrated: say which and what to do, not a traceback.
        from esafety.config import load_settings

        where = load_settings().database_url.rpartition("@")[2]
        problem = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"esafety: the store ({where}) cannot serve this: {problem}", file=sys.stderr)
        if "no such table" in problem or "does not exist" in problem:
            print("  its schema is missing or old: run `esafety db upgrade`", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
