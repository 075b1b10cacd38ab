"""Test-only mitmproxy add-on: every upstream request goes to the local origin servers.

It runs after the esafety add-ons (loaded later), so the policy sees the real names
(www.bet365.com); only the connection is pointed at 127.0.0.1, with the Host header kept,
and no packet leaves the machine. Requests to ports other than 80 and 443 are left where they
point: the tests of what the proxy refuses to reach (its own machine) aim there. Never part of
the product.
"""

from __future__ import annotations

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks


class RedirectToOrigin:
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("test_origin_http", int, 0, "local HTTP origin port")
        loader.add_option("test_origin_https", int, 0, "local HTTPS origin port")

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.request.port not in (80, 443):
            return
        host_header = flow.request.host_header
        port = ctx.options.test_origin_https if flow.request.scheme == "https" else ctx.options.test_origin_http
        flow.request.host, flow.request.port = "127.0.0.1", port
        flow.request.host_header = host_header

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # Tunnels passed through undecrypted (no-inspect hosts) have no request to rewrite.
        if data.server.address and data.server.address[0] != "127.0.0.1" and data.server.address[1] == 443:
            data.server.address = ("127.0.0.1", ctx.options.test_origin_https)


addons = [RedirectToOrigin()]
