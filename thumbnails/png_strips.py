"""Decode a plain PNG a strip of rows at a time, never the whole image at once.

Pillow decodes a PNG into one full-size image (46 MiB for 12 MP RGBA) and
cannot start its decoder mid-stream. Here zlib inflates the IDAT data on
demand, and Pillow unfilters each strip from an uncompressed zlib stream.
PNG filters read the row above, so each strip starts with the rows it
repeats from the previous one, stored unfiltered (filter type 0).

Only what Pillow would decode byte for byte the same way takes this path: one
8-bit, non-interlaced, unanimated image without tRNS and with nothing but
IEND after its pixel data (trailing EXIF, XMP or text is read by Pillow only
while loading). Everything else returns None from `idat_spans`, and the caller
lets Pillow decode the whole image.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from PIL import Image

try:  # zlib-ng inflates about twice as fast as the zlib Python links to
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover (a requirement; the stdlib works too)
    import zlib

# PNG modes whose 8-bit samples Pillow stores as they are in the file.
MODES = ("L", "LA", "RGB", "RGBA")

Span = tuple[int, int]  # (offset, length) of one IDAT chunk's data


def idat_spans(image: Image.Image, stream: BinaryIO) -> list[Span] | None:
    """Where the pixel data of a plain PNG is in ``stream``, or None.

    None also for a file that ends early: Pillow's own decode reports that.
    """
    if image.format != "PNG" or not _plain(image):
        return None
    spans = []
    position = image.tile[0].offset - 8
    while True:
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            return None
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            return spans or None
        if kind != b"IDAT":
            return None
        spans.append((position + 8, length))
        position += length + 12  # header, data, CRC


def decode(
    stream: BinaryIO,
    spans: list[Span],
    mode: str,
    width: int,
    windows: Iterable[tuple[int, int]],
    overlap: int,
) -> Iterator[tuple[int, Image.Image]]:
    """Yield (top row, strip) for each (top, bottom) window, top to bottom.

    Each window after the first starts ``overlap`` rows above the previous
    one's bottom. A stream that ends early raises OSError("image file is
    truncated"), as Pillow's decoder does; damaged data raises zlib.error or
    Pillow's OSError.
    """
    row_bytes = width * len(mode)
    inflater = _Inflater(stream, spans)
    above, decoded = b"", 0
    for top, bottom in windows:
        filtered = inflater.read((bottom - decoded) * (row_bytes + 1))
        strip = Image.new(mode, (width, bottom - top), None)  # None: not cleared
        strip.frombytes(_stored_zlib(above, filtered), "zip", mode)
        yield top, strip
        kept = strip.crop((0, strip.height - overlap, width, strip.height))
        above = _unfiltered_rows(kept.tobytes(), row_bytes)
        decoded = bottom


def windows(height: int, rows: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(top, bottom) rows of strips of ``rows`` new rows each, every strip after
    the first starting ``overlap`` rows above the previous one's bottom."""
    top, bottom = 0, min(height, rows)
    yield top, bottom
    while bottom < height:
        top, bottom = bottom - overlap, min(height, bottom + rows)
        yield top, bottom


def _plain(image: Image.Image) -> bool:
    if image.mode not in MODES or len(image.tile) != 1:
        return False
    codec, extents, _, rawmode = image.tile[0]
    return (
        codec == "zip"
        and rawmode == image.mode  # 8 bits per sample, as stored
        and tuple(extents or ()) == (0, 0, *image.size)
        and not image.info.get("interlace")
        and "default_image" not in image.info  # APNG
        and "transparency" not in image.info
        and getattr(image, "n_frames", 1) == 1
    )


def _unfiltered_rows(pixels: bytes, row_bytes: int) -> bytes:
    """Rows as PNG scanlines with filter type 0 (none)."""
    rows = range(0, len(pixels), row_bytes)
    return b"".join(b"\0" + pixels[start : start + row_bytes] for start in rows)


def _stored_zlib(*parts: bytes) -> bytes:
    """The parts as one zlib stream of stored blocks: copied, not compressed."""
    blocks, checksum = [b"\x78\x01"], 1
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(part), 0xFFFF):
            block = view[start : start + 0xFFFF]
            blocks += (struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF), block)
        checksum = zlib.adler32(part, checksum)
    final = b"\x01\x00\x00\xff\xff"  # an empty last block
    return b"".join((*blocks, final, struct.pack(">I", checksum)))


class _Inflater:
    """The PNG's IDAT data, read and inflated on demand, never all at once."""

    def __init__(self, stream: BinaryIO, spans: list[tuple[int, int]]) -> None:
        self._pieces = _read_spans(stream, spans)
        self._zlib = zlib.decompressobj()
        self._pending = b""

    def read(self, size: int) -> bytes:
        """Exactly size inflated bytes; a stream that ends before is truncated."""
        parts = []
        while size > 0:
            if not self._pending:
                self._pending = next(self._pieces, b"")
                if not self._pending or self._zlib.eof:
                    raise OSError("image file is truncated")
            part = self._zlib.decompress(self._pending, size)
            self._pending = self._zlib.unconsumed_tail
            parts.append(part)
            size -= len(part)
        return b"".join(parts)


def _read_spans(stream: BinaryIO, spans: list[tuple[int, int]]) -> Iterator[bytes]:
    """The spans' bytes in pieces of about a megabyte, however small the chunks.

    Inflating a megabyte gives a whole strip in one piece, where the usual
    64 KiB IDAT chunks would give it in six pieces to join.
    """
    pieces, size = [], 0
    for offset, length in spans:
        stream.seek(offset)
        while length > 0:
            piece = stream.read(min(length, _READ_BYTES - size))
            if not piece:
                break
            pieces.append(piece)
            size, length = size + len(piece), length - len(piece)
            if size >= _READ_BYTES:
                yield b"".join(pieces)
                pieces, size = [], 0
    if pieces:
        yield b"".join(pieces)


_READ_BYTES = 1 << 20
