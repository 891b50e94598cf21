"""What an image file's bytes are, read before a decoder sees them: the format by its signature (a file's extension can
lie) and whether a PNG is intact. torchvision's PNG decoder ends the whole process (SIGSEGV) on data libpng rejects
(a flipped byte in IDAT, a header claiming more pixels than the data holds), so :func:`png_problem` checks what can be
checked cheaply first: every critical chunk's CRC, the end chunk, and that the compressed data can hold the header's
size."""

from __future__ import annotations

import struct
import zlib

__all__ = ["sniff", "png_problem"]

_PNG = b"\x89PNG\r\n\x1a\n"
#: samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA)
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: deflate expands at most ~1032x (a run of one byte); a header needing more raw bytes than this times its compressed
#: data (plus slack for the zlib and filter framing) cannot be intact
_DEFLATE_MAX_RATIO, _SLACK = 1040, 1024


def sniff(data: bytes) -> str | None:
    """``"png"`` or ``"jpeg"`` by the file's signature, else ``None`` (another format: a decoder by content decides)."""
    if data.startswith(_PNG):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def png_problem(data: bytes) -> str | None:
    """Why the PNG ``data`` cannot be intact (a critical chunk's CRC, a missing end chunk, too little image data for its
    header), or ``None``: one pass of ``zlib.crc32`` over the bytes, a few microseconds for a CIFAR image."""
    pos, idat, header = len(_PNG), 0, None
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return f"the {kind.decode('latin-1')} chunk runs past the end of the file (truncated?)"
        (crc,) = struct.unpack_from(">I", data, end - 4)
        # critical chunks only (an upper-case first letter): libpng warns of an ancillary one (tEXt, iCCP) and drops it
        if kind[:1].isupper() and zlib.crc32(data[pos + 4:end - 4]) != crc:
            return f"the {kind.decode('latin-1')} chunk fails its CRC check (corrupted data)"
        if kind == b"IHDR" and length >= 13:
            header = struct.unpack_from(">IIBB", data, pos + 8)
        elif kind == b"IDAT":
            idat += length
        elif kind == b"IEND":
            break
        pos = end
    else:
        return "it has no IEND chunk (truncated?)"
    if header is None:
        return "it has no IHDR chunk"
    width, height, depth, colour = header
    row = 1 + -(-width * _SAMPLES.get(colour, 4) * depth // 8)
    if height * row > _DEFLATE_MAX_RATIO * idat + _SLACK:
        return f"its {idat} bytes of image data cannot hold the {width}x{height} pixels its header names (truncated?)"
    return None
