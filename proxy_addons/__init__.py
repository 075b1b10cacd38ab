"""mitmproxy add-ons: thin adapters from flows to esafety.policy and back. Order matters: the PROXY
protocol reader first (the client's address before anything reads it), then the runtime, sign-in
(who is behind the request), filtering
before content checks, the access log last (it records the outcome). Destinations checks each server
connection as it opens (the proxy's own machine is out of reach). They reach mitmproxy as one
add-on, a Chain, whose failsafe applies the group's on_error when one of them fails on a flow."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_addons.chain import Chain


def build() -> Chain:
    """The esafety add-ons as the one add-on mitmproxy loads (a proxy_addons.chain.Chain)."""
    from proxy_addons.accesslog import AccessLog
    from proxy_addons.chain import Chain
    from proxy_addons.content import ContentScan
    from proxy_addons.destinations import Destinations
    from proxy_addons.dns_canary import DnsCanary
    from proxy_addons.downloads import Downloads
    from proxy_addons.failsafe import Failsafe
    from proxy_addons.filtering import Filtering
    from proxy_addons.proxyproto import ProxyProtocol
    from proxy_addons.runtime import Runtime
    from proxy_addons.signin import SignIn

    rt = Runtime()
    return Chain([ProxyProtocol(), rt, SignIn(rt), Filtering(rt), Destinations(), Downloads(rt), ContentScan(rt),
                  DnsCanary(rt), AccessLog(rt)], Failsafe(rt))
