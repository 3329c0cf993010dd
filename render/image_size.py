"""An image's pixel size read from its header, before anything decodes it.

A decompression bomb is small on the wire and huge in memory: a 186 KB PNG
declares 8000×8000 pixels (512 MB as ImageMagick's 16-bit pixels). Its header
says so in the first bytes, so the card checks the declared size against a
pixel budget and draws initials instead of asking ImageMagick to find out.

Only the formats avatars may have (og/avatars.py sniffs them): PNG (IHDR),
GIF (the logical screen and the first frame's descriptor: a frame may be
larger than the screen it claims), JPEG (the first SOFn marker) and WebP
(VP8, VP8L or VP8X). Anything that cannot be read is None: not an image we
will decode.
"""

from __future__ import annotations

import struct

# 2048 x 2048: a 16-bit RGBA decode of 32 MiB. The card draws a 240 px circle; an owner whose avatar
# is larger gets initials until they link a smaller size (Discord's CDN takes ?size=512).
MAX_AVATAR_PIXELS = 2048 * 2048

# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: no length field


def image_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) declared by the header of `data` in format `kind` (png|gif|jpeg|webp), or None."""
    try:
        reader = _READERS.get(kind)
        return reader(data) if reader is not None else None
    except (struct.error, IndexError, ValueError):
        return None


def within_budget(data: bytes, kind: str, max_pixels: int = MAX_AVATAR_PIXELS) -> bool:
    size = image_size(data, kind)
    return size is not None and size[0] > 0 and size[1] > 0 and size[0] * size[1] <= max_pixels


def _png(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _gif(data: bytes) -> tuple[int, int] | None:
    screen_w, screen_h, flags = struct.unpack("<HHB", data[6:11])
    pos = 13
    if flags & 0x80:  # global colour table
        pos += 3 << ((flags & 7) + 1)
    while pos < len(data):
        block = data[pos]
        if block == 0x21:  # extension: label, then sub-blocks until a zero length
            pos += 2
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        elif block == 0x2C:  # the first image descriptor
            frame_x, frame_y, frame_w, frame_h = struct.unpack("<HHHH", data[pos + 1 : pos + 9])
            return max(screen_w, frame_x + frame_w), max(screen_h, frame_y + frame_h)
        else:
            return None
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: a signature byte, then 14-bit sizes minus one
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended (alpha, animation): 24-bit canvas sizes minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


_READERS = {"png": _png, "gif": _gif, "jpeg": _jpeg, "webp": _webp}
