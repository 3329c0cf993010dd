"""Decompression bombs made on the spot: small files that declare (or hold) a huge number of pixels.

- `png_bomb()`: 8000 x 8000 RGB of one colour, zlib level 9: ~187 KB on the wire, 512 MB as
  ImageMagick's 16-bit RGBA pixels.
- `gif_bomb()`: 200 full frames of 1000 x 1000 (each a different colour from the one before, so no
  encoder or decoder may merge them): each frame decodes to 8 MB, 1.6 GB for the whole animation.

Both take well under a second: the PNG's rows are compressed a hundred at a time, once, and the
GIF's two distinct frames are encoded once by Pillow and repeated.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_bomb(side: int = 8000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # Every row is the same (filter byte 0, black pixels), so one full-flushed deflate segment of `rows`
    # rows is valid wherever it is repeated: compress it once, repeat it, then a final empty block.
    rows = 100
    assert side % rows == 0
    block = b"\x00" * ((1 + side * 3) * rows)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(side // rows):
        checksum = zlib.adler32(block, checksum)
    body = b"\x78\xda" + segment * (side // rows) + b"\x03\x00" + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


PALETTE = [255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6)  # index 0 red, index 1 blue


def _single_frame(index: int, side: int) -> bytes:
    frame = Image.new("P", (side, side), index)
    frame.putpalette(PALETTE)
    out = io.BytesIO()
    frame.save(out, "GIF", optimize=False)
    return out.getvalue()


def _image_block(gif: bytes) -> tuple[bytes, bytes]:
    """(header through the global colour table, the first image descriptor through its data) of a GIF."""
    flags = gif[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    pos = start
    while gif[pos] == 0x21:  # skip extensions
        pos += 2
        while gif[pos]:
            pos += gif[pos] + 1
        pos += 1
    assert gif[pos] == 0x2C and gif[-1] == 0x3B
    return gif[:start], gif[pos:-1]


def gif_bomb(frames: int = 200, side: int = 1000) -> bytes:
    head, red = _image_block(_single_frame(0, side))
    _, blue = _image_block(_single_frame(1, side))
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    control = b"\x21\xf9\x04\x00\x02\x00\x00\x00"  # 20 ms per frame, no transparency
    body = b"".join(control + (red if i % 2 == 0 else blue) for i in range(frames))
    return head.replace(b"GIF87a", b"GIF89a", 1) + loop + body + b"\x3b"
