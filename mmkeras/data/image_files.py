"""A cheap check of one encoded image before training: readable, complete, its size.

`inspect_image(source)` opens the header (Pillow reads a few kilobytes, decodes nothing)
and looks at the end of the file for the format's end marker, so a missing file, a file
that is not an image, a format `tf.io.decode_image` cannot read and a truncated file are
all found up front, in a fraction of the time a decode takes. A file whose header and end
are sound but whose middle is corrupt is not found here; the decoder then reports it.
"""

import io
import os
import struct

from PIL import Image

# What tf.io.decode_image reads (TIFF, for one, it does not).
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_TAIL = 4096  # bytes read from the end of a file for the end-marker check


class BadImage(ValueError):
    """An image that will not decode, with the reason a person can act on."""


def inspect_image(source):
    """(height, width) of an encoded image: `source` is a path (str) or the file's bytes.

    Raises BadImage naming what is wrong (not found, not an image, a format the decoder
    does not read, truncated).
    """
    if isinstance(source, str):
        try:
            size = os.path.getsize(source)
        except OSError:
            raise BadImage(f"image file not found: '{source}'") from None
        if not os.path.isfile(source):
            raise BadImage(f"not a file: '{source}'")
        with open(source, "rb") as f:
            fmt, shape = _header(f, source)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
            f.seek(0)
            head = f.read(32)
        name = f"'{source}'"
    else:
        data = bytes(source)
        size, name = len(data), "the image bytes"
        fmt, shape = _header(io.BytesIO(data), name)
        head, tail = data[:32], data[-_TAIL:]
    if not _complete(fmt, head, tail, size):
        raise BadImage(f"{name} is truncated (a {fmt} file without its end; {size} bytes)")
    return shape


def _header(f, name):
    try:
        with Image.open(f) as image:
            fmt, (width, height) = image.format, image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage(f"cannot read {name} as an image ({type(err).__name__}: {err})") from None
    if fmt not in DECODABLE_FORMATS:
        raise BadImage(f"{name} is a {fmt} image; the decoder reads {', '.join(DECODABLE_FORMATS)}: "
                       "convert it")
    if width < 1 or height < 1:
        raise BadImage(f"{name} has no pixels ({width}x{height})")
    return fmt, (height, width)


def _complete(fmt, head, tail, size):
    """Whether the file reaches its format's end (encoders write it last)."""
    if fmt == "JPEG":  # end-of-image marker (cameras may append bytes after it)
        return b"\xff\xd9" in tail
    if fmt == "PNG":
        return b"IEND" in tail[-64:]
    if fmt == "GIF":
        return tail.rstrip(b"\x00").endswith(b";")
    if fmt == "BMP":  # the header states the file size
        return size >= struct.unpack("<I", head[2:6])[0]
    if fmt == "WEBP":  # RIFF: the chunk size after 'RIFF' counts the rest of the file
        return size >= struct.unpack("<I", head[4:8])[0] + 8
    return True
