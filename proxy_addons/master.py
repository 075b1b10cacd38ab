"""`esafety-mitmdump`: mitmdump with the esafety add-ons built in, as `esafety proxy` runs it.

Two differences from `mitmdump -s proxy_addons/entry.py`, neither in what any add-on sees:

- Our add-ons are registered as one of mitmproxy's own, just before the script loader: the
  built-in add-ons meet them in the order they would meet a first script, and scripts given with
  `-s` (the tests' redirect) still run after them. A policy that does not compile stops the start
  before the port opens, with its file:line errors, as any bad mitmdump option does (under `-s`,
  mitmdump reports a script's error only once it is listening).
- Events reach only the add-ons that handle them (`IndexedAddons`). Stock mitmproxy walks every
  add-on (~40) for every event (eight a request) through a coroutine, a context manager and two
  generators each, whether or not it has the hook: more than half of all its CPU for a 12 KB page
  (8.4M instructions a request under callgrind, 3.8M with the index; tests/bench/bench_proxy.py
  measures both cores). The same handlers run, in the same order, with the same arguments.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, exceptions, hooks, options
from mitmproxy.addonmanager import AddonManager, safecall, traverse
from mitmproxy.addons.script import ScriptLoader
from mitmproxy.master import Master
from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import run

from proxy_addons import build
from proxy_addons.runtime import settle_gc


class IndexedAddons(AddonManager):
    """mitmproxy's add-on manager, with each event's handlers listed once, not looked up each time.

    The lists are rebuilt after anything that can change which add-ons there are or what they
    hold: registering or removing one (scripts reload this way) and every configure (the script
    loader changes its scripts there). All of these are synchronous, so no event runs between a
    change and the next list.
    """

    def __init__(self, master: Master) -> None:
        super().__init__(master)
        self._handlers: dict[str, list[Callable[..., Any]]] = {}

    @classmethod
    def replacing(cls, master: Master) -> IndexedAddons:
        """Take over the master's add-ons and option updates from its stock manager."""
        old = master.addons
        master.options.changed.disconnect(old._configure_all)
        new = cls(master)
        new.chain, new.lookup = old.chain, old.lookup
        master.addons = new
        return new

    def handlers(self, name: str) -> list[Callable[..., Any]]:
        found = self._handlers.get(name)
        if found is None:
            found = self._handlers[name] = [f for a in traverse(self.chain) if callable(f := getattr(a, name, None))]
        return found

    def register(self, addon: Any) -> Any:
        self._handlers.clear()
        return super().register(addon)

    def remove(self, addon: Any) -> None:
        self._handlers.clear()
        super().remove(addon)

    def _configure_all(self, updated: set[str]) -> None:  # every option change arrives here
        self._handlers.clear()
        super()._configure_all(updated)

    async def trigger_event(self, event: hooks.Hook) -> None:
        handlers = self.handlers(event.name)
        if not handlers:
            return
        args = event.args()
        for handler in handlers:
            try:
                with safecall():  # as mitmproxy: an add-on's error is logged, the next still runs
                    res = handler(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
            except exceptions.AddonHalt:
                return


class CoreMaster(DumpMaster):
    """mitmdump with indexed event dispatch and no add-ons of ours (the benchmark's second core)."""

    def __init__(self, opts: options.Options, **kw: Any) -> None:
        super().__init__(opts, **kw)
        IndexedAddons.replacing(self)

    async def running(self) -> None:
        await super().running()
        settle_gc()  # our runtime did so already; without it (the core alone) it is the first time


class EsafetyMaster(CoreMaster):
    def __init__(self, opts: options.Options, **kw: Any) -> None:
        super().__init__(opts, **kw)
        chain = self.addons.chain
        at = next(i for i, a in enumerate(chain) if isinstance(a, ScriptLoader))
        chain.insert(at, self.addons.register(build()))


def _after_options(args: Any) -> dict[str, Any]:
    """Once every option is read (inside mitmproxy's OptionsError handling): our add-ons are
    configured with all options as set, as the script loader does for a script. An add-on is
    otherwise configured only with the options that changed."""
    master = ctx.master
    if esafety := master.addons.get("esafety"):
        master.addons.invoke_addon_sync(esafety, hooks.ConfigureHook(set(master.options.keys())))
    if args.filter_args:  # as mitmdump does
        v = " ".join(args.filter_args)
        return {"save_stream_filter": v, "readfile_filter": v, "dumper_filter": v}
    return {}


def main(argv: list[str] | None = None, master: type[DumpMaster] = EsafetyMaster) -> None:
    run(master, cmdline.mitmdump, sys.argv[1:] if argv is None else argv, _after_options)


if __name__ == "__main__":
    main()
