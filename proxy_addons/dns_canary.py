"""Answer Firefox's DoH canary (use-application-dns.net) with NXDOMAIN, so browsers keep DoH off.

Active when the proxy also serves DNS (mitmdump `--mode dns@PORT`, or transparent DNS; see deploy/).
"""

from __future__ import annotations

from mitmproxy import dns

from proxy_addons.runtime import Runtime

CANARY = "use-application-dns.net"


class DnsCanary:
    def __init__(self, rt: Runtime):
        self.rt = rt

    def dns_request(self, flow: dns.DNSFlow) -> None:
        engine = self.rt.engine
        if engine is None or not engine.policy.circumvention.doh_canary:
            return
        if any(q.name.lower().rstrip(".") == CANARY for q in flow.request.questions):
            flow.response = flow.request.fail(dns.response_codes.NXDOMAIN)
