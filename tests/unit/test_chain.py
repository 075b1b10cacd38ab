"""The Chain: a handler that hands back an awaitable (sign-in checked in a thread) delays the
handlers after it, not the others' flows; a failure while waiting goes to the failsafe."""

from __future__ import annotations

import asyncio
from typing import Any

from mitmproxy.proxy.layers import http as _http  # noqa: F401 - defines the request hook the Chain looks up
from mitmproxy.test import tflow

from proxy_addons.chain import Chain


class Recorder:
    def __init__(self, name: str, log: list[str], wait: bool = False, fail: bool = False):
        self.name, self.log, self.wait, self.fail = name, log, wait, fail

    def request(self, flow: Any) -> Any:
        if not self.wait:
            self.log.append(self.name)
            return None

        async def later() -> None:
            await asyncio.sleep(0)
            if self.fail:
                raise RuntimeError("directory exploded")
            self.log.append(self.name)
        return later()


def test_the_handlers_after_a_waiting_one_run_once_it_is_done() -> None:
    log: list[str] = []
    chain = Chain([Recorder("signin", log, wait=True), Recorder("filtering", log), Recorder("accesslog", log)])
    pending = chain.request(tflow.tflow())  # type: ignore[attr-defined]
    assert log == [] and pending is not None, "nothing after the waiting handler has run yet"
    asyncio.run(pending)
    assert log == ["signin", "filtering", "accesslog"]


def test_a_flow_that_need_not_wait_is_handled_at_once() -> None:
    log: list[str] = []
    chain = Chain([Recorder("signin", log), Recorder("filtering", log)])
    assert chain.request(tflow.tflow()) is None  # type: ignore[attr-defined]
    assert log == ["signin", "filtering"]


def test_a_failure_while_waiting_goes_to_the_failsafe_and_the_rest_still_run() -> None:
    log: list[str] = []
    seen: list[tuple[str, str]] = []
    chain = Chain([Recorder("signin", log, wait=True, fail=True), Recorder("accesslog", log)],
                  failsafe=lambda hook, handler, flow: seen.append((hook, handler)))  # type: ignore[arg-type]
    asyncio.run(chain.request(tflow.tflow()))  # type: ignore[attr-defined]
    assert seen == [("request", "Recorder.request")] and log == ["accesslog"]
