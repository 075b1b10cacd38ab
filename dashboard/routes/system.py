"""Unauthenticated system endpoints: health, Prometheus metrics, the PAC file for browsers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/proxy.pac")
@router.get("/wpad.dat")
def pac(request: Request) -> Response:
    s = request.app.state.settings
    proxy_host = s.proxy_host if s.proxy_host not in ("0.0.0.0", "::") else request.url.hostname
    body = f"""// esafety proxy auto-config: everything through the school filter except local names.
function FindProxyForURL(url, host) {{
  if (isPlainHostName(host) || shExpMatch(host, "*.local") || host == "127.0.0.1" || host == "localhost" ||
      isInNet(dnsResolve(host), "10.0.0.0", "255.0.0.0") || isInNet(dnsResolve(host), "172.16.0.0", "255.240.0.0") ||
      isInNet(dnsResolve(host), "192.168.0.0", "255.255.0.0")) {{
    return "DIRECT";
  }}
  return "PROXY {proxy_host}:{s.proxy_port}";
}}
"""
    return Response(body, media_type="application/x-ns-proxy-autoconfig")
