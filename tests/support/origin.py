"""Real HTTP and HTTPS origin servers on 127.0.0.1 for proxy tests.

Any host name is served (the proxy is pointed here by tests/support/redirect_addon.py); each
request is recorded so a test can check what reached the origin (e.g. safe-search rewrites).
Routes are (path prefix -> (status, headers, body)); unknown paths get a small HTML page.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass
class Seen:
    method: str
    host: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Origin:
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    http_port: int = 0
    https_port: int = 0

    def route(self, path: str, body: bytes | str, content_type: str = "text/html; charset=utf-8", status: int = 200,
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = (status, {"Content-Type": content_type, **(headers or {})}, data)

    def requests_to(self, host: str) -> list[Seen]:
        return [s for s in self.seen if s.host.split(":")[0] == host]


def _handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def setup(self) -> None:
            # TLS handshakes run here, in the connection's own thread, so one stalled client
            # cannot block the accept loop for everyone else.
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(10)
                self.request.do_handshake()
            super().setup()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            origin.seen.append(Seen(self.command, self.headers.get("Host", ""), self.path,
                                    {k.lower(): v for k, v in self.headers.items()}, body))
            path = self.path.split("?", 1)[0]
            match = max((p for p in origin.routes if path.startswith(p)), key=len, default=None)
            if match is None:
                status, headers, data = 200, {"Content-Type": "text/html; charset=utf-8"}, (
                    f"<html><body><h1>origin page</h1><p>{self.headers.get('Host', '')}{path}</p></body></html>"
                ).encode()
            else:
                status, headers, data = origin.routes[match]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = do_PUT = _serve

    return H


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esafety test origin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "origin.crt", tmp / "origin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, addr = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # clients that abort the handshake (tests of hostile input) are not errors here


def start(tmp: Path, host: str = "127.0.0.1", http_port: int = 0,
          https_port: int = 0) -> tuple[Origin, list[ThreadingHTTPServer]]:
    origin = Origin()
    plain = ThreadingHTTPServer((host, http_port), _handler(origin))
    plain.daemon_threads = True
    tls = _TLSServer((host, https_port), _handler(origin))
    cert, key = self_signed(tmp)
    tls.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.context.load_cert_chain(cert, key)
    origin.http_port, origin.https_port = plain.server_address[1], tls.server_address[1]
    for srv in (plain, tls):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    return origin, [plain, tls]
