"""Raw frame -> the few header fields the sensor needs, with struct and slices only.

This is the hot path: every captured frame passes through `parse`, so it builds no objects beyond
one tuple, never uses scapy layers, and distrusts every length field (a corrupt or hostile frame
is dropped with a reason, never allowed to raise or to index past the buffer).
"""

from __future__ import annotations

from struct import unpack_from
from typing import Final

# Link types (pcap LINKTYPE_* numbers) we can read.
LINKTYPE_NULL: Final = 0  # BSD loopback: 4-byte address family, host byte order
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101  # raw IPv4/IPv6, version nibble decides
LINKTYPE_RAW_OLD: Final = 12  # DLT_RAW on some BSDs; same content
LINKTYPE_RAW_OLD2: Final = 14
LINKTYPE_LOOP: Final = 108  # OpenBSD loopback: family in network byte order
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
SUPPORTED_LINKTYPES: Final = frozenset({0, 1, 12, 14, 101, 108, 113, 228, 229, 276})

# IP protocol numbers the detectors care about.
TCP: Final = 6
UDP: Final = 17
GRE: Final = 47
ESP: Final = 50
AH: Final = 51
L2TPV3: Final = 115

# TCP flags
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
ACK: Final = 0x10

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_BSD_AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS
_NO_MAC = b""
# IPv6 extension headers we walk through to reach the transport header.
_V6_EXT = frozenset({0, 43, 60, 135, 139, 140})
_V6_FRAGMENT = 44

# Reasons a frame is dropped; the label values of esafety_sensor_dropped_packets_total.
DROP_REASONS: Final = ("linktype", "truncated", "bad_header", "bad_length", "fragment", "not_ip", "other_proto")


# parse() returns (proto, src, dst, sport, dport, ttl, payload, tcp_flags, mac) as a plain tuple (the
# cheapest thing CPython can build): src/dst are packed address bytes (4 or 16), payload a bytes slice,
# sport/dport 0 for protocols without ports, tcp_flags 0 for non-TCP, mac b"" when the link has none.


# (proto, src, dst, sport, dport, ttl, payload, tcp_flags, mac)
Parsed = tuple[int, bytes, bytes, int, int, int, bytes, int, bytes]


def parse(linktype: int, frame: bytes, snapped: bool = False) -> Parsed | str:
    """Parse one frame. Returns the Parsed-shaped tuple, or the drop reason (a str).

    `snapped` says the capture cut this frame short on purpose (caplen < wirelen): IP length
    fields may then exceed what we hold, and that is not a lie, only a short payload.
    """
    n = len(frame)
    mac = _NO_MAC
    if linktype == 1:
        if n < 14:
            return "truncated"
        etype = (frame[12] << 8) | frame[13]
        off = 14
        while etype in _VLAN_TAGS:  # 802.1Q / QinQ: skip each 4-byte tag
            if n < off + 4:
                return "truncated"
            etype = (frame[off + 2] << 8) | frame[off + 3]
            off += 4
        mac = frame[6:12]
    elif linktype == 113:
        if n < 16:
            return "truncated"
        etype = (frame[14] << 8) | frame[15]
        off = 16
        if frame[4:6] == b"\x00\x06":  # link-layer address length 6: a MAC we can attribute
            mac = frame[6:12]
    elif linktype == 276:
        if n < 20:
            return "truncated"
        etype = (frame[0] << 8) | frame[1]
        off = 20
        if frame[11] == 6:
            mac = frame[12:18]
    elif linktype in (101, 12, 14, 228, 229):
        if n < 1:
            return "truncated"
        etype = _ETH_IPV4 if frame[0] >> 4 == 4 else _ETH_IPV6 if frame[0] >> 4 == 6 else 0
        off = 0
    elif linktype in (0, 108):
        if n < 4:
            return "truncated"
        fam = unpack_from("<I" if linktype == 0 else ">I", frame, 0)[0]
        if linktype == 0 and fam > 0xFFFF:  # written on a big-endian host
            fam = unpack_from(">I", frame, 0)[0]
        etype = _ETH_IPV4 if fam == 2 else _ETH_IPV6 if fam in _BSD_AF_INET6 else 0
        off = 4
    else:
        return "linktype"

    if etype == _ETH_IPV4:
        if n < off + 20:
            return "truncated"
        vihl = frame[off]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return "bad_header"
        total = (frame[off + 2] << 8) | frame[off + 3]
        if total < ihl:
            return "bad_length"
        end = off + total
        if end > n:
            if not snapped:
                return "bad_length"  # the frame is whole, so the IP header lies about its size
            end = n
        if n < off + ihl:
            return "truncated"
        if ((frame[off + 6] << 8) | frame[off + 7]) & 0x3FFF:  # MF set or a non-zero offset
            return "fragment"
        proto = frame[off + 9]
        ttl = frame[off + 8]
        src = frame[off + 12:off + 16]
        dst = frame[off + 16:off + 20]
        l4 = off + ihl
    elif etype == _ETH_IPV6:
        if n < off + 40:
            return "truncated"
        if frame[off] >> 4 != 6:
            return "bad_header"
        plen = (frame[off + 4] << 8) | frame[off + 5]
        end = off + 40 + plen
        if end > n:
            if not snapped:
                return "bad_length"
            end = n
        proto = frame[off + 6]
        ttl = frame[off + 7]
        src = frame[off + 8:off + 24]
        dst = frame[off + 24:off + 40]
        l4 = off + 40
        hops = 0
        while proto in _V6_EXT or proto == _V6_FRAGMENT:
            if l4 + 8 > end or hops > 8:
                return "truncated" if l4 + 8 > end else "bad_header"
            if proto == _V6_FRAGMENT:
                return "fragment"
            proto = frame[l4]
            l4 += 8 + frame[l4 + 1] * 8
            hops += 1
        if l4 > end:
            return "bad_length"
    else:
        return "not_ip"

    if proto == 6:
        if end < l4 + 20:
            return "truncated"
        doff = (frame[l4 + 12] >> 4) * 4
        if doff < 20:
            return "bad_header"
        if l4 + doff > end:
            return "truncated" if snapped else "bad_length"
        return (6, src, dst, (frame[l4] << 8) | frame[l4 + 1], (frame[l4 + 2] << 8) | frame[l4 + 3], ttl,
                frame[l4 + doff:end], frame[l4 + 13], mac)
    if proto == 17:
        if end < l4 + 8:
            return "truncated"
        ulen = (frame[l4 + 4] << 8) | frame[l4 + 5]
        if ulen < 8 or (l4 + ulen > end and not snapped):
            return "bad_length"
        uend = min(l4 + ulen, end)
        return (17, src, dst, (frame[l4] << 8) | frame[l4 + 1], (frame[l4 + 2] << 8) | frame[l4 + 3], ttl,
                frame[l4 + 8:uend], 0, mac)
    if proto in (47, 50, 51, 115):  # tunnels without ports: the flow is the address pair
        return (proto, src, dst, 0, 0, ttl, frame[l4:end], 0, mac)
    return "other_proto"
