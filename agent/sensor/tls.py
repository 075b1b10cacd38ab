"""Just enough TLS to read a ClientHello: SNI, ALPN, offered ciphers. Bounds-checked throughout.

Modern ClientHellos (post-quantum key shares) span two TCP segments, so `needed` tells the caller
how many bytes the first handshake record wants, and the caller joins segments up to that.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HELLO = 16_384 + 5  # one TLS record


@dataclass(frozen=True, slots=True)
class ClientHello:
    sni: str | None
    alpn: tuple[str, ...]
    version: int  # legacy_version of the hello (0x0303 for TLS 1.2 and 1.3)
    ciphers: int  # number of cipher suites offered
    extensions: tuple[int, ...]


def is_handshake(buf: bytes) -> bool:
    """A TLS handshake record carrying a ClientHello (type 1)."""
    return len(buf) >= 6 and buf[0] == 0x16 and buf[1] == 3 and buf[2] <= 4 and buf[5] == 1


def needed(buf: bytes) -> int:
    """Bytes of the first record (header included), capped at one maximal record."""
    if len(buf) < 5:
        return 5
    return min(5 + ((buf[3] << 8) | buf[4]), MAX_HELLO)


def parse_client_hello(buf: bytes) -> ClientHello | None:
    """Parse the ClientHello at the start of `buf` (a TLS record); None when it is not one or is cut."""
    if not is_handshake(buf):
        return None
    end = min(len(buf), needed(buf))
    p = 5
    if p + 4 > end:
        return None
    hs_end = min(end, p + 4 + ((buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]))
    p += 4
    if p + 35 > hs_end:
        return None
    version = (buf[p] << 8) | buf[p + 1]
    p += 34  # version, random
    p += 1 + buf[p]  # session id
    if p + 2 > hs_end:
        return None
    clen = (buf[p] << 8) | buf[p + 1]
    p += 2 + clen
    if p + 1 > hs_end:
        return None
    p += 1 + buf[p]  # compression methods
    sni: str | None = None
    alpn: list[str] = []
    exts: list[int] = []
    if p + 2 <= hs_end:
        ext_end = min(hs_end, p + 2 + ((buf[p] << 8) | buf[p + 1]))
        p += 2
        while p + 4 <= ext_end:
            etype = (buf[p] << 8) | buf[p + 1]
            elen = (buf[p + 2] << 8) | buf[p + 3]
            body = p + 4
            p = body + elen
            if p > ext_end:
                break  # lying length: keep what was read so far
            exts.append(etype)
            if etype == 0 and elen >= 5:  # server_name: list len(2), type(1), name len(2), name
                nlen = (buf[body + 3] << 8) | buf[body + 4]
                if buf[body + 2] == 0 and body + 5 + nlen <= p:
                    sni = buf[body + 5:body + 5 + nlen].decode("ascii", "replace").lower()
            elif etype == 16 and elen >= 2:  # ALPN: list len(2), then len(1)+name entries
                q, qend = body + 2, min(p, body + 2 + ((buf[body] << 8) | buf[body + 1]))
                while q < qend:
                    ln = buf[q]
                    if q + 1 + ln > qend:
                        break
                    alpn.append(buf[q + 1:q + 1 + ln].decode("ascii", "replace"))
                    q += 1 + ln
    return ClientHello(sni, tuple(alpn), version, clen // 2, tuple(exts))
