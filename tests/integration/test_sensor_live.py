"""`esafety sensor run` on the loopback interface while real clients and servers talk through it.

Needs root (raw capture on `lo`); the OpenVPN case also needs Debian's openvpn and openssl.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from esafety.config import PROJECT_ROOT
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")


@contextmanager
def sensor(tmp_path: Path, ports: list[int], config: str = "") -> Iterator[list[dict]]:
    """Run the sensor on lo for `ports`; yields the list its JSON detections land in when it stops."""
    cfg = tmp_path / "sensor.yaml"
    cfg.write_text(config or "{}\n")
    bpf = " or ".join(f"port {p}" for p in ports)
    env = {**os.environ, "ESAFETY_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "esafety.cli", "sensor", "run", "--iface", "lo", "--bpf", bpf,
                             "--config", str(cfg), "--json", "--no-store", "--seconds", "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=env)
    ready = ""
    while "capturing on lo" not in ready:  # printed once the capture socket is open
        line = proc.stderr.readline()
        assert line, ready + proc.stderr.read()
        ready += line
    found: list[dict] = []
    try:
        yield found
    finally:
        time.sleep(0.3)  # let the last frames reach the socket
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        found.extend(json.loads(line) for line in out.splitlines())
        found.append({"_stats": json.loads(err.strip().splitlines()[-1])})


def detections(found: list[dict]) -> list[tuple[str, int]]:
    return sorted((d["protocol"], d["server_port"]) for d in found if "protocol" in d)


def _serve(srv: socket.socket, handler) -> threading.Thread:
    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_socks5_proxy_and_bittorrent_peers(tmp_path: Path):
    echo_port, socks_port, peer_port = free_port(), free_port(), free_port()
    echo, proxy = _listener(echo_port), _listener(socks_port)

    def echo_handler(c: socket.socket) -> None:
        with c:
            c.sendall(c.recv(100))

    def socks_handler(c: socket.socket) -> None:  # a minimal but working SOCKS5 CONNECT proxy
        with c:
            c.recv(10)
            c.sendall(b"\x05\x00")
            req = c.recv(300)
            name = req[5:5 + req[4]].decode()
            port = int.from_bytes(req[-2:], "big")
            with socket.create_connection((name, port), timeout=5) as up:
                c.sendall(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
                up.sendall(c.recv(100))
                c.sendall(up.recv(100))

    _serve(echo, echo_handler)
    _serve(proxy, socks_handler)
    # A second process is the BitTorrent peer: it answers a handshake with its own.
    peer_code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1',{peer_port})); s.listen(); print('ready', flush=True)\n"
        "c,_=s.accept(); hs=c.recv(68)\n"
        "c.sendall(b'\\x13BitTorrent protocol'+bytes(8)+hs[28:48]+b'-XX0001-'+b'0'*12); c.recv(10)\n"
    )
    peer = subprocess.Popen([sys.executable, "-c", peer_code], stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "ready"
        with sensor(tmp_path, [socks_port, peer_port]) as found:
            with socket.create_connection(("127.0.0.1", socks_port), timeout=5) as c:
                c.sendall(b"\x05\x01\x00")
                assert c.recv(2) == b"\x05\x00"
                c.sendall(b"\x05\x01\x00\x03\x09localhost" + echo_port.to_bytes(2, "big"))
                assert c.recv(10)[:2] == b"\x05\x00"
                c.sendall(b"ping through the proxy")
                assert c.recv(100) == b"ping through the proxy"
            info_hash = bytes(range(20))
            with socket.create_connection(("127.0.0.1", peer_port), timeout=5) as c:
                c.sendall(b"\x13BitTorrent protocol" + bytes(8) + info_hash + b"-TR3000-" + b"1" * 12)
                reply = c.recv(68)
                assert reply[28:48] == info_hash
            assert peer.wait(timeout=10) == 0
    finally:
        peer.kill()
        echo.close()
        proxy.close()
    assert detections(found) == sorted([("socks", socks_port), ("bittorrent", peer_port)])
    socks = next(d for d in found if d.get("protocol") == "socks")
    assert socks["evidence"]["target"] == f"localhost:{echo_port}" and socks["category"] == "web_proxies"
    bt = next(d for d in found if d.get("protocol") == "bittorrent")
    assert bt["evidence"]["info_hash"] == bytes(range(20)).hex()
    assert found[-1]["_stats"]["dropped"] == {}


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=esafety-test"],
                   check=True, capture_output=True, timeout=30)
    return key, cert


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make a certificate")
def test_dns_over_tls_and_doh_by_name(tmp_path: Path):
    key, cert = _self_signed(tmp_path)
    dot_port, https_port = free_port(), free_port()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    servers = [_listener(dot_port), _listener(https_port)]

    def tls_handler(c: socket.socket) -> None:
        try:
            with sctx.wrap_socket(c, server_side=True) as t:
                q = t.recv(512)
                t.sendall(q)  # echo the query back as the "answer"
        except (ssl.SSLError, OSError):
            pass

    for s in servers:
        _serve(s, tls_handler)
    cctx = ssl.create_default_context(cafile=str(cert))
    cctx.check_hostname = False
    # The school's config makes our DoT test port a DoT port: detection follows the config, not code.
    with sensor(tmp_path, [dot_port, https_port], f"ports: {{dot: [{dot_port}]}}\n") as found:
        query = b"\x00\x1d" + b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
        for port, sni in ((dot_port, None), (https_port, "dns.google")):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    cctx.wrap_socket(raw, server_hostname=sni) as t:
                t.sendall(query)
                assert t.recv(512) == query
    for s in servers:
        s.close()
    assert detections(found) == sorted([("dot", dot_port), ("doh", https_port)])
    doh = next(d for d in found if d.get("protocol") == "doh")
    assert doh["evidence"]["sni"] == "dns.google" and doh["category"] == "doh" and doh["incident"] is True


@pytest.mark.skipif(not (shutil.which("openvpn") and shutil.which("openssl")), reason="needs openvpn and openssl")
def test_real_openvpn_handshake(tmp_path: Path):
    key, cert = _self_signed(tmp_path)
    port = free_port()
    common = ["--dev", "null", "--proto", "udp", "--ca", str(cert), "--cert", str(cert), "--key", str(key),
              "--verb", "3", "--ping", "1"]
    with sensor(tmp_path, [port]) as found:
        server = subprocess.Popen(["openvpn", *common, "--tls-server", "--dh", "none", "--local", "127.0.0.1",
                                   "--lport", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        client = subprocess.Popen(["openvpn", *common, "--tls-client", "--nobind", "--remote", "127.0.0.1", str(port)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 20
            connected = False
            while time.monotonic() < deadline and not connected:
                line = client.stdout.readline()
                connected = "Initialization Sequence Completed" in line
                if not line and client.poll() is not None:
                    break
            assert connected, "openvpn client did not connect"
        finally:
            for p in (client, server):
                p.terminate()
                p.wait(timeout=10)
    dets = [d for d in found if d.get("protocol")]
    assert [(d["protocol"], d["server_port"], d["transport"]) for d in dets] == [("openvpn", port, "udp")]
    assert dets[0]["confidence"] >= 0.95 and dets[0]["evidence"]["pattern"] == "hard reset exchange"
