"""A compact, memory-mapped domain -> category-bitmask index for millions of domains.

Each domain is stored as a 64-bit SipHash-1-3 of its name in an open-addressing table (load <= 0.5),
with a parallel table of category bitmasks. One million domains take 32 MiB of table, shared
read-only through mmap, instead of ~100 MB as a Python set of strings; a compiled index loads in
milliseconds. A lookup hashes each label suffix of the host (`a.b.example` -> `a.b.example`,
`b.example`, `example`): whole-label matching falls out of that for free.

The hash is keyed with a random key kept in the file, so nobody can choose a name that collides
with an allow-listed one; by chance a collision is ~n/2**64 per lookup. When no entry is a single
label (the usual case), the top-level label is never hashed.

Lookups run in C (`_hostindex.c`, built with the package). `PyTable` is the same table in Python:
the reference the C code is tested against, and the fallback where no compiler built it.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

_MAGIC = b"ESDX0003"
_HEADER = struct.Struct("<8sQQQQQ")  # magic, slots, entries, flags, k0, k1
_SINGLE_LABEL = 1  # flag: some entry is a single label ("intranet"), so top-level labels must be looked up
_M64 = (1 << 64) - 1
NON_ASCII = 1 << 63  # classify's marks: a name for IDNA, or what may be an address; never a category bit
ADDRESS_LIKE = 1 << 62
MARKS = NON_ASCII | ADDRESS_LIKE


class Table(Protocol):
    entries: int
    single_label: bool

    def lookup(self, host: str) -> int:
        """OR of the category bits of a normalised host and every parent domain of it."""

    def classify(self, host: str) -> tuple[str, int]:
        """(host lower-cased without trailing dots, its bits), or a mark in place of the bits: NON_ASCII
        for a name that needs IDNA, ADDRESS_LIKE for a trailing digit, a colon or "0x"."""

    def insert(self, domains: Iterable[str], bit: int) -> None:
        """Add normalised domains with a category bit (ORed into a domain already present)."""


def siphash13(k0: int, k1: int, data: bytes) -> int:
    """SipHash-1-3 (as CPython hashes bytes); the reference for the C version."""

    def rounds(v0: int, v1: int, v2: int, v3: int, n: int) -> tuple[int, int, int, int]:
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = ((v1 << 13) | (v1 >> 51)) & _M64 ^ v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _M64
            v2 = (v2 + v3) & _M64
            v3 = ((v3 << 16) | (v3 >> 48)) & _M64 ^ v2
            v0 = (v0 + v3) & _M64
            v3 = ((v3 << 21) | (v3 >> 43)) & _M64 ^ v0
            v2 = (v2 + v1) & _M64
            v1 = ((v1 << 17) | (v1 >> 47)) & _M64 ^ v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _M64
        return v0, v1, v2, v3

    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    whole = len(data) & ~7
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v0, v1, v2, v3 = rounds(v0, v1, v2, v3 ^ m, 1)
        v0 ^= m
    b = (len(data) & 0xFF) << 56 | int.from_bytes(data[whole:], "little")
    v0, v1, v2, v3 = rounds(v0, v1, v2, v3 ^ b, 1)
    v0, v1, v2, v3 = rounds(v0 ^ b, v1, v2 ^ 0xFF, v3, 3)
    return v0 ^ v1 ^ v2 ^ v3


class PyTable:
    """The table in plain Python: what `_hostindex.Table` does, about a tenth of the speed."""

    def __init__(self, keys: memoryview | array, masks: memoryview | array, k0: int, k1: int,
                 single_label: bool, entries: int):
        slots = len(keys)
        if slots < 2 or slots & (slots - 1) or len(masks) != slots or not 0 <= entries < slots:
            raise ValueError("keys and masks must be equal tables of a power-of-two size, not full")
        self._keys, self._masks, self._m = keys, masks, slots - 1
        self._k0, self._k1 = k0, k1
        self.single_label, self.entries = single_label, entries

    def _find(self, name: bytes) -> int:
        k = siphash13(self._k0, self._k1, name) | 1  # 0 marks an empty slot
        keys, m = self._keys, self._m
        i = k & m
        for _ in range(m + 1):
            v = keys[i]
            if v == k:
                return self._masks[i]
            if not v:
                return 0
            i = (i + 1) & m
        return 0

    def lookup(self, host: str) -> int:
        b = host.encode("utf-8", "surrogatepass")  # lone surrogates: a hostile Host's undecodable bytes
        # Suffixes start at offsets <= end; without single-label entries, the top-level label is skipped.
        end = len(b) if self.single_label else b.rfind(b".")
        if end < 0:
            return 0
        bits = start = 0
        while True:
            bits |= self._find(b[start:])
            start = b.find(b".", start) + 1
            if not start or start > end:
                return bits

    def classify(self, host: str) -> tuple[str, int]:
        if not host.isascii():
            return host, NON_ASCII
        name = host.lower().rstrip(".")
        if name and (name[-1].isdigit() or ":" in name or "0x" in name):
            return name, ADDRESS_LIKE
        return name, self.lookup(name)

    def insert(self, domains: Iterable[str], bit: int) -> None:
        keys, masks, m = self._keys, self._masks, self._m
        for domain in domains:
            k = siphash13(self._k0, self._k1, domain.encode()) | 1
            i = k & m
            while keys[i] and keys[i] != k:
                i = (i + 1) & m
            if not keys[i]:
                if self.entries >= (m + 1) // 2:
                    raise ValueError("more items than the count given")
                keys[i] = k
                self.entries += 1
            masks[i] |= bit
            if "." not in domain:
                self.single_label = True


try:
    from esafety.policy._hostindex import Table as NativeTable
except ImportError:  # no compiler at install: correct, only slower
    NativeTable = None  # type: ignore[assignment,misc]
    logging.getLogger("esafety.policy").warning(
        "the C domain index (esafety/policy/_hostindex.c) is not built; using the pure-Python one, "
        "about a tenth of the speed: reinstall with a C compiler and the Python headers")

TableType = type[NativeTable] | type[PyTable]
DEFAULT_TABLE: TableType = NativeTable or PyTable


class DomainIndex:
    __slots__ = ("_keys", "_masks", "_k", "_mm", "table", "lookup", "classify")

    def __init__(self, keys: memoryview | array, masks: memoryview | array, k: tuple[int, int], table: Table,
                 mm: mmap.mmap | None = None):
        self._keys, self._masks, self._k, self._mm = keys, masks, k, mm
        self.table = table
        self.lookup = table.lookup  # bound once: the hot path calls straight into the table
        self.classify = table.classify

    @classmethod
    def build(cls, lists: Iterable[tuple[Iterable[str], int]], count: int,
              table: TableType = DEFAULT_TABLE) -> DomainIndex:
        """lists: (normalised domains, category bit); count: how many domains in all (an upper bound).

        Inserted straight into a table sized for count: no intermediate dict, which for a million
        domains would need ~100 MB more. A domain in several lists ORs their bits into one slot.
        """
        slots = 1 << max(4, (count * 2 - 1).bit_length())
        keys = array("Q", bytes(8 * slots))
        masks = array("Q", bytes(8 * slots))
        k = (int.from_bytes(os.urandom(8), "little"), int.from_bytes(os.urandom(8), "little"))
        t = table(keys, masks, k[0], k[1], False, 0)
        for domains, bit in lists:
            t.insert(domains, bit)
        return cls(keys, masks, k, t)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(_HEADER.pack(_MAGIC, len(self._keys), self.table.entries,
                                  _SINGLE_LABEL if self.table.single_label else 0, *self._k))
            fh.write(memoryview(self._keys).cast("B"))
            fh.write(memoryview(self._masks).cast("B"))
        os.replace(tmp, path)  # atomic: a reader never sees half an index

    @classmethod
    def load(cls, path: Path, table: TableType = DEFAULT_TABLE) -> DomainIndex:
        with open(path, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            magic, slots, entries, flags, k0, k1 = _HEADER.unpack_from(mm, 0)
        except struct.error:
            magic = slots = 0
        if magic != _MAGIC or mm.size() != _HEADER.size + 16 * slots or slots & (slots - 1) or entries >= slots:
            mm.close()
            raise ValueError(f"{path}: not a compiled esafety domain index")
        view = memoryview(mm)
        keys = view[_HEADER.size:_HEADER.size + 8 * slots].cast("Q")
        masks = view[_HEADER.size + 8 * slots:].cast("Q")
        return cls(keys, masks, (k0, k1), table(keys, masks, k0, k1, bool(flags & _SINGLE_LABEL), entries), mm)

    def __len__(self) -> int:
        return self.table.entries
