"""Is this download an executable, installer, disk image, torrent, or an archive of those?

Judged by extension, Content-Type and magic bytes, so an .exe renamed .jpg is still caught.
"""

from __future__ import annotations

import io
import re
import zipfile

from esafety.policy.schema import Downloads

# (magic at offset, label)
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"MZ", "windows-executable"),
    (0, b"\x7fELF", "elf-executable"),
    (0, b"\xcf\xfa\xed\xfe", "macho-executable"),
    (0, b"\xce\xfa\xed\xfe", "macho-executable"),
    (0, b"\xca\xfe\xba\xbe", "macho-universal"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "msi-installer"),
    (0, b"d8:announce", "torrent"),
    (0, b"d13:announce-list", "torrent"),
    (0, b"d7:comment", "torrent"),
    (0, b"!<arch>\ndebian", "deb-package"),
    (0, b"\xed\xab\xee\xdb", "rpm-package"),
    (0x8001, b"CD001", "iso-image"),
    (0, b"#!/bin/sh", "shell-script"),
    (0, b"#!/bin/bash", "shell-script"),
)
# The offset-0 magics by their first byte: most bodies (HTML, images) start with none of them,
# and one dict lookup says so.
_BY_FIRST_BYTE: dict[int, tuple[tuple[bytes, str], ...]] = {}
for _offset, _magic, _label in _MAGIC:
    if _offset == 0:
        _BY_FIRST_BYTE[_magic[0]] = (*_BY_FIRST_BYTE.get(_magic[0], ()), (_magic, _label))
_AT_OFFSET = tuple(m for m in _MAGIC if m[0])
_EXE_IN_ARCHIVE = re.compile(r"\.(exe|msi|scr|bat|cmd|com|ps1|vbs|jar|apk|dmg|app/|pkg|iso|torrent)$", re.IGNORECASE)
_DISPOSITION_NAME = re.compile(r"""filename\*?=(?:UTF-8'')?["']?([^"';]+)""", re.IGNORECASE)


def filename_of(path: str, content_disposition: str) -> str:
    m = _DISPOSITION_NAME.search(content_disposition or "")
    return (m.group(1) if m else path.rsplit("/", 1)[-1]).strip().lower()


def by_headers(rules: Downloads, path: str, content_type: str, content_disposition: str) -> str | None:
    name = filename_of(path, content_disposition)
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext in rules.extensions:
        return f"extension .{ext}"
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in rules.content_types:
        return f"content-type {ctype}"
    return None


def by_content(rules: Downloads, body: bytes, whole: bool = True) -> str | None:
    """Magic bytes at the start of the body; a whole (not streamed) zip body is opened to look for
    executables. Called on every response a pupil gets: no copies of the body."""
    if not rules.magic or not body:
        return None
    for magic, label in _BY_FIRST_BYTE.get(body[0], ()):
        if body.startswith(magic):
            return f"content is {label}"
    for offset, magic, label in _AT_OFFSET:
        if body.startswith(magic, offset):
            return f"content is {label}"
    if whole and rules.inspect_archives and body.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                for info in zf.infolist()[:5000]:
                    if _EXE_IN_ARCHIVE.search(info.filename):
                        return f"archive contains {info.filename.rsplit('/', 1)[-1][:80]}"
        except (zipfile.BadZipFile, ValueError, OSError):
            return None
    return None
