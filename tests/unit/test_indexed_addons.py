"""esafety-mitmdump's event dispatch: the handlers stock mitmproxy would call, in its order."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions, options
from mitmproxy.addonmanager import traverse
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import tflow

from proxy_addons.master import CoreMaster, IndexedAddons


class Recorder:
    def __init__(self, name: str, seen: list[str], then: type[Exception] | None = None):
        self.name, self.seen, self.then = name, seen, then

    def request(self, flow) -> None:
        self.seen.append(self.name)
        if self.then:
            raise self.then("stop" if self.then is exceptions.AddonHalt else "simulated bug")


class AsyncRecorder(Recorder):
    async def request(self, flow) -> None:
        await asyncio.sleep(0)
        self.seen.append(self.name)


class Parent:  # an add-on holding others, as the script loader holds scripts
    def __init__(self, name: str, children: list[object]):
        self.name, self.addons = name, children


def _run(check) -> None:
    async def main() -> None:
        master = CoreMaster(options.Options(), with_termlog=False, with_dumper=False)
        assert isinstance(master.addons, IndexedAddons)
        await check(master)
    asyncio.run(main())


def test_events_reach_the_handlers_stock_mitmproxy_would_call_in_its_order():
    seen: list[str] = []

    async def check(master) -> None:
        master.addons.add(Recorder("a", seen), Parent("p", [AsyncRecorder("b", seen), Recorder("c", seen)]),
                          Recorder("d", seen))
        stock = [a.request for a in traverse(master.addons.chain) if callable(getattr(a, "request", None))]
        assert master.addons.handlers("request") == stock
        await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))
        assert seen == ["a", "b", "c", "d"]
    _run(check)


def test_adding_and_removing_add_ons_changes_who_is_called():
    seen: list[str] = []

    async def check(master) -> None:
        first = Recorder("first", seen)
        master.addons.add(first)
        await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))
        master.addons.remove(first)  # a script reload removes the old module, then registers the new
        master.addons.add(Recorder("second", seen))
        await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))
        assert seen == ["first", "second"]
    _run(check)


def test_an_error_is_logged_and_the_next_still_runs_and_a_halt_stops_the_rest(caplog: pytest.LogCaptureFixture):
    seen: list[str] = []

    async def check(master) -> None:
        master.addons.add(Recorder("broken", seen, RuntimeError), Recorder("next", seen),
                          Recorder("halt", seen, exceptions.AddonHalt), Recorder("never", seen))
        with caplog.at_level(logging.ERROR):
            await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))
        assert seen == ["broken", "next", "halt"]
        assert "simulated bug" in caplog.text
    _run(check)
