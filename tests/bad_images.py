"""Image files that break readers: a decompression bomb PNG and a truncated JPEG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image


def write_bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A 100-byte PNG whose header claims ``width x height`` pixels (patched IHDR, valid CRC)."""
    Image.new("1", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def write_truncated_jpeg(path: Path, source: Path) -> Path:
    """The first half of a real JPEG's bytes."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
