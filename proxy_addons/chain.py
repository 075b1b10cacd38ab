"""The esafety add-ons presented to mitmproxy as one add-on, each hook calling ours in order.

Each add-on keeps one concern; this only changes how mitmproxy reaches them. Stock mitmproxy walks
every add-on object for every event (eight a request: four hooks, each followed by `update`) and
rebuilds the hook's arguments for every method it calls; for eight separate objects under the
script loader that cost ~30 us a request, measured inside mitmdump. Here each hook is one
attribute: our one handler itself, or a loop over the handlers. (esafety-mitmdump goes further for
all add-ons: proxy_addons/master.py.)

A handler may return an awaitable when it has to wait (proxy sign-in checked in a thread): the
handlers after it then run once it is done, and the hook stays synchronous for every other flow.
A handler of a flow event that raises is logged and the next still runs (the access log records a
response whichever check before it failed). On a request, response or CONNECT the failsafe first
applies the group's on_error (proxy_addons/failsafe.py): a pupil never gets what a failed check
did not pass. Lifecycle hooks raise as they would (a bad option must stop mitmproxy).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import hooks, http

from proxy_addons.failsafe import GUARDED, Failsafe

log = logging.getLogger("esafety.proxy")

_LIFECYCLE = {"load", "configure", "running", "done"}


def _calls(name: str, handlers: Sequence[Callable[..., Any]], failsafe: Failsafe | None) -> Callable[..., Any]:
    guarded = failsafe is not None and name in GUARDED
    if len(handlers) == 1 and not guarded:
        return handlers[0]  # mitmproxy calls it as it would any hook

    lifecycle = name in _LIFECYCLE

    def failed(h: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if lifecycle:
            raise
        if not guarded or not args or not isinstance(args[0], http.HTTPFlow):
            log.exception("add-on hook failed", extra={"fields": {"hook": name, "handler": h.__qualname__}})
            return
        try:
            failsafe(name, h.__qualname__, args[0])  # type: ignore[misc]
        except Exception:  # the last resort: the flow goes nowhere
            log.exception("failsafe failed", extra={"fields": {"hook": name, "handler": h.__qualname__}})
            args[0].kill()

    async def run_from(rest: Sequence[Callable[..., Any]], args: Any, waiting: Callable[..., Any] | None = None,
                       pending: Any = None) -> None:
        if waiting is not None:
            try:
                await pending
            except Exception:
                failed(waiting, args)
        for h in rest:
            try:
                res = h(*args)
                if inspect.isawaitable(res):
                    await res
            except Exception:
                failed(h, args)

    if any(inspect.iscoroutinefunction(h) for h in handlers):
        async def run_async(*args: Any) -> None:
            await run_from(handlers, args)
        return run_async

    def run(*args: Any) -> Any:
        for i, h in enumerate(handlers):
            try:
                res = h(*args)
            except Exception:
                failed(h, args)
                continue
            if res is not None and inspect.isawaitable(res):
                # A handler that must wait (a sign-in checked off the event loop) hands back an
                # awaitable; mitmproxy awaits what a hook returns, and the later handlers run after it.
                return run_from(handlers[i + 1:], args, h, res)
        return None
    return run


class Chain:
    name = "esafety"  # the name mitmproxy knows it by (ctx.master.addons.get("esafety"))

    def __init__(self, parts: Sequence[object], failsafe: Failsafe | None = None):
        self.parts = tuple(parts)  # not `addons`: mitmproxy would walk them one by one again
        for hook in hooks.all_hooks:
            handlers = [h for p in self.parts if callable(h := getattr(p, hook, None))]
            if handlers:
                setattr(self, hook, _calls(hook, handlers, failsafe))

    def part(self, cls: type) -> Any:
        return next(p for p in self.parts if isinstance(p, cls))
