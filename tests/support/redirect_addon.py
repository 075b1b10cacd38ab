"""Test-only mitmproxy add-on: every upstream connection goes to the local origin servers.

Hosts, SNI and Host headers stay as the client sent them, so the policy sees real names
(www.bet365.com) while no packet leaves 127.0.0.1. Never part of the product.
"""

from __future__ import annotations

from mitmproxy import ctx
from mitmproxy.proxy import server_hooks


class RedirectToOrigin:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("test_origin_http", int, 0, "local HTTP origin port")
        loader.add_option("test_origin_https", int, 0, "local HTTPS origin port")

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        tls = data.server.tls or (data.server.address and data.server.address[1] == 443)
        port = ctx.options.test_origin_https if tls else ctx.options.test_origin_http
        data.server.address = ("127.0.0.1", port)


addons = [RedirectToOrigin()]
