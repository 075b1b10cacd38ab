"""Frames from a capture file or a live interface, as (timestamp, bytes, linktype, snapped).

Both sources use scapy only for I/O: RawPcapReader (which also opens pcapng) for files and a raw
L2 listen socket for interfaces, never dissecting a packet into scapy layers.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scapy.config import conf
from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader

Frame = tuple[float, bytes, int, bool]

# Scapy warns once per odd record; the sensor counts those itself.
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)


class CaptureError(Exception):
    """The capture cannot be opened at all (not a pcap/pcapng file, no such interface)."""


class PcapFrames:
    """Iterate a pcap or pcapng file. A corrupt or cut-off file ends iteration early, never raises;
    `complete` then says whether the whole file was read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.complete = True
        try:
            self.reader = RawPcapReader(str(self.path))
        except (Scapy_Exception, OSError, EOFError, ValueError) as exc:
            raise CaptureError(f"{self.path}: not a readable pcap/pcapng capture ({exc})") from exc
        self.size = os.path.getsize(self.path)

    def __iter__(self) -> Iterator[Frame]:
        reader = self.reader
        linktype = getattr(reader, "linktype", None)
        nano = bool(getattr(reader, "nano", False))
        scale = 1e-9 if nano else 1e-6
        try:
            if linktype is not None:  # classic pcap: one link type for the file
                for data, meta in reader:
                    if meta.caplen > len(data):  # the record promises more than the file holds: cut off
                        self.complete = False
                        break
                    yield meta.sec + meta.usec * scale, data, linktype, meta.wirelen > len(data)
            else:  # pcapng: each interface block has its own
                for data, meta in reader:
                    m: Any = meta  # scapy's pcapng metadata has these fields; its type stub does not
                    ts = ((m.tshigh << 32) | m.tslow) / (m.tsresol or 1_000_000)
                    yield ts, data, m.linktype, (m.wirelen or 0) > len(data)
        except (Scapy_Exception, ValueError, OSError, KeyError, IndexError) as exc:
            logging.getLogger("esafety.sensor").warning("capture read stopped: %s", exc)
            self.complete = False
        finally:
            try:
                if reader.f.tell() < self.size:
                    self.complete = False
            except (OSError, ValueError):
                pass
            reader.close()


def live_frames(iface: str, bpf: str | None = None, stop: Callable[[], bool] | None = None,
                poll: float = 0.25, ready: Callable[[], None] | None = None) -> Iterator[Frame]:
    """Frames from a live interface until `stop()` says so (checked at least every `poll` seconds);
    `ready()` is called once the capture socket is open, so callers know nothing is being missed."""
    import scapy.arch  # noqa: F401 - sets conf.L2listen for this platform

    try:
        sock = conf.L2listen(iface=iface, filter=bpf)
    except (OSError, Scapy_Exception) as exc:
        raise CaptureError(f"cannot capture on {iface}: {exc}") from exc
    if ready:
        ready()
    try:
        while not (stop and stop()):
            readable, _, _ = select.select([sock], [], [], poll)
            if not readable:
                continue
            cls, data, ts = sock.recv_raw()
            if data is None:
                continue
            linktype = conf.l2types.layer2num.get(cls, 1) if cls is not None else 1
            yield (ts or time.time()), data, linktype, False
    finally:
        sock.close()
