"""mitmproxy add-ons: thin adapters from flows to esafety.policy and back. Order matters: the PROXY
protocol reader first (the client's address before anything reads it), then the runtime, filtering
before content checks, the access log last (it records the outcome). Destinations checks each server
connection as it opens (the proxy's own machine is out of reach)."""

from __future__ import annotations


def build() -> list[object]:
    from proxy_addons.accesslog import AccessLog
    from proxy_addons.content import ContentScan
    from proxy_addons.destinations import Destinations
    from proxy_addons.dns_canary import DnsCanary
    from proxy_addons.downloads import Downloads
    from proxy_addons.filtering import Filtering
    from proxy_addons.proxyproto import ProxyProtocol
    from proxy_addons.runtime import Runtime

    rt = Runtime()
    return [ProxyProtocol(), rt, Filtering(rt), Destinations(), Downloads(rt), ContentScan(rt), DnsCanary(rt),
            AccessLog(rt)]
