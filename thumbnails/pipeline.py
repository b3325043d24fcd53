"""Validate untrusted image uploads and make web thumbnails from them.

Pure Python and Pillow, no Django: the upload views call `inspect` to refuse
bad files while the user is still there, and the thumbnailer worker calls
`render` to turn an accepted original into bytes that it stores itself.

Decisions, each made once here so that every caller behaves alike:

- Only an allowlist of formats is ever opened (EPS would run Ghostscript).
  MPO (a JPEG with extra frames, as phone cameras write) counts as JPEG.
- Pixel limits are checked from headers before any pixel is decoded, on the
  whole canvas of every GIF frame; Pillow's global limits are left alone.
- A truncated or corrupt file is refused by `inspect`, at upload time, and
  `render` decodes everything before it yields its first rendition.
- Colour: an embedded ICC profile is converted to sRGB and then dropped, so
  outputs carry no profile and no other metadata (no EXIF, XMP or comments).
- Animations give their first frame. EXIF orientation (and HEIF's and
  AVIF's own rotation and mirroring) is applied.
- HEIC/HEIF (through pillow-heif) and AVIF (Pillow's own) of 10 or 12 bits
  come out as 8 bits; HDR ones (PQ or HLG transfer) are tone-mapped to SDR.
- Output is never upscaled; JPEG flattens alpha on white, WebP and AVIF keep it.
- `inspect` also makes a tiny placeholder (a ~24 px WebP as a data: URI) and
  the dominant colour, from the decode it does anyway.
"""

import base64
import bisect
import functools
import io
import logging
import math
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from thumbnails import png_strips

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SPECS",
    "CorruptImage",
    "DecompressionBomb",
    "FileTooLarge",
    "ImageInfo",
    "ImageRejected",
    "Rendition",
    "Spec",
    "UnsupportedFormat",
    "inspect",
    "render",
]

OUTPUT_CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
}

# An open binary file (an UploadedFile, BytesIO, ...), the bytes, or a path.
ImageSource = BinaryIO | bytes | str | os.PathLike[str]


@dataclass(frozen=True)
class Spec:
    """One output to make: a name, a bound on the long edge, a format, a quality."""

    name: str
    size: int
    format: str
    quality: int = 85

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_CONTENT_TYPES:
            accepted = ", ".join(OUTPUT_CONTENT_TYPES)
            raise ValueError(f"Spec format must be one of {accepted}: {self.format!r}")
        if self.size < 1:
            raise ValueError(f"Spec size must be a positive pixel count: {self.size}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"Spec quality must be within 1-100: {self.quality}")


DEFAULT_SPECS: tuple[Spec, ...] = tuple(
    Spec(name, size, fmt)
    for name, size in (("small", 160), ("medium", 640), ("large", 1600))
    for fmt in ("JPEG", "WEBP")
)
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "HEIF", "AVIF")
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 25 * 1024 * 1024


class ImageRejected(ValueError):
    """An upload we refuse: str() is a sentence for the uploader, `code` is for code."""

    code = "image_rejected"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFormat(ImageRejected):
    """Not an image, or an image in a format outside the allowlist."""

    code = "unsupported_format"


class DecompressionBomb(ImageRejected):
    """Declares far more pixels (or frames, or metadata) than we agree to decode."""

    code = "decompression_bomb"


class CorruptImage(ImageRejected):
    """An accepted format whose data is truncated, damaged or unreadable."""

    code = "corrupt_image"


class FileTooLarge(ImageRejected):
    """More bytes than the upload limit."""

    code = "file_too_large"


@dataclass(frozen=True)
class ImageInfo:
    """What `inspect` learnt; width and height are as displayed (EXIF applied)."""

    format: str
    width: int
    height: int
    frames: int
    mode: str
    has_alpha: bool
    placeholder: str  # a data: URI of a tiny WebP (PLACEHOLDER_SIZE)
    color: str  # the dominant colour, #rrggbb


@dataclass(frozen=True)
class Rendition:
    """One encoded output, ready to be written to storage."""

    spec: Spec
    width: int
    height: int
    format: str
    data: bytes
    content_type: str


def inspect(
    fileobj: ImageSource,
    *,
    formats: Iterable[str] = DEFAULT_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImageInfo:
    """Validate an upload and describe it, or raise an `ImageRejected`.

    Beyond the header checks the first frame is really decoded (JPEG at 1/8
    scale, which still reads every byte; a plain PNG a strip at a time) so
    that truncated and corrupt files are refused at upload time rather than
    failing later in a worker; that decode also gives the placeholder.
    """
    with _open_image(fileobj, tuple(formats), max_pixels, max_bytes) as source:
        mode, has_alpha = source.image.mode, source.image.has_transparency_data
        with _translate_errors():
            preview, (width, height) = _prepare(source, PLACEHOLDER_SIZE)
            placeholder, color = _placeholder(preview)
        return ImageInfo(
            format=source.format,
            width=width,
            height=height,
            frames=source.frames,
            mode=mode,
            has_alpha=has_alpha,
            placeholder=placeholder,
            color=color,
        )


def render(
    fileobj: ImageSource,
    specs: Iterable[Spec] = DEFAULT_SPECS,
    *,
    formats: Iterable[str] = DEFAULT_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Rendition]:
    """Yield one rendition per spec, largest first, so callers can report progress.

    The image is decoded once, at the smallest JPEG scale that still covers the
    largest output, and each smaller size is resized from the next larger one.
    All decoding (and so every check of the input) happens before the first
    rendition is yielded: a bad file fails before any output exists. Colours
    are converted to sRGB when the file embeds another ICC profile.
    """
    ordered = sorted(specs, key=lambda spec: spec.size, reverse=True)
    if not ordered:
        return
    opened = _open_image(fileobj, tuple(formats), max_pixels, max_bytes)
    with opened as source, _translate_errors():
        largest, full_size = _prepare(source, ordered[0].size)
    current = largest
    for spec in ordered:
        with _translate_errors():
            size = _fit(full_size, spec.size)
            # Each size from the next larger one, except sizes 4x or more
            # below it, which come from the largest: one resampling pass
            # fewer keeps them closer to a direct resize (+0.01-0.3 dB) for
            # about a millisecond.
            source_image = largest if current.width >= 4 * size[0] else current
            current = _shrink(source_image, size)
            data = _encode(current, spec)
        yield Rendition(
            spec=spec,
            width=current.width,
            height=current.height,
            format=spec.format,
            data=data,
            content_type=OUTPUT_CONTENT_TYPES[spec.format],
        )


# --- Opening: size, format allowlist, pixel limits --------------------------

# Pillow ids shown the way people write them.
_DISPLAY_NAMES = {"WEBP": "WebP", "JPEG2000": "JPEG 2000", "HEIF": "HEIC/HEIF"}

# Magic numbers of formats people upload by mistake, so that the refusal can
# name what was sent. Pillow never sees these files: the allowlist is checked
# first, and unknown bytes are refused with the same message minus the name.
_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("JPEG", lambda h: h.startswith(b"\xff\xd8\xff")),
    # A PNG signature that lost its first byte is still a (damaged) PNG.
    ("PNG", lambda h: b"PNG\r\n\x1a\n" in h[:9]),
    ("GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a")),
    ("WEBP", lambda h: h.startswith(b"RIFF") and h[8:12] == b"WEBP"),
    ("BMP", lambda h: h.startswith(b"BM")),
    ("TIFF", lambda h: h[:4] in (b"II*\x00", b"MM\x00*")),
    ("ICO", lambda h: h.startswith(b"\x00\x00\x01\x00")),
    ("CUR", lambda h: h.startswith(b"\x00\x00\x02\x00")),
    ("JPEG2000", lambda h: h.startswith((b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP"))),
    # AVIF first: an AVIF may name the generic HEIF brand mif1 as well.
    ("AVIF", lambda h: _brands(h) & {b"avif", b"avis"}),
    ("HEIF", lambda h: _brands(h) & _HEIF_BRANDS),
    ("JPEG XL", lambda h: h.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL "))),
    ("PSD", lambda h: h.startswith(b"8BPS")),
    ("PDF", lambda h: h.startswith(b"%PDF")),
    ("EPS", lambda h: h.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6"))),
    ("SGI", lambda h: h.startswith(b"\x01\xda")),
    ("FITS", lambda h: h.startswith(b"SIMPLE  =")),
    ("BLP", lambda h: h[:4] in (b"BLP1", b"BLP2")),
    ("FLI", lambda h: h[4:6] in (b"\x11\xaf", b"\x12\xaf")),
    ("QOI", lambda h: h.startswith(b"qoif")),
    ("DDS", lambda h: h.startswith(b"DDS ")),
    ("SVG", lambda h: h.lstrip().startswith((b"<svg", b"<?xml"))),
    ("Microsoft Office document", lambda h: h.startswith(b"\xd0\xcf\x11\xe0")),
    ("ZIP archive", lambda h: h.startswith(b"PK\x03\x04")),
    ("gzip archive", lambda h: h.startswith(b"\x1f\x8b")),
)

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _brands(head: bytes) -> set[bytes]:
    """An ISO media file's major and compatible brands, from the ftyp box at
    its start (as far as ``head`` reaches)."""
    if head[4:8] != b"ftyp":
        return set()
    return {head[8:12]} | {head[i : i + 4] for i in range(16, len(head) - 3, 4)}


# Past this many GIF frames we stop walking and refuse the file.
MAX_FRAMES = 10_000
# ICC profiles larger than this are ignored (treated as sRGB), never parsed.
MAX_ICC_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Source:
    image: Image.Image
    format: str  # the allowlist name: "JPEG" for MPO too
    size: tuple[int, int]  # as stored, before EXIF orientation
    frames: int
    stream: BinaryIO  # what Pillow reads from, for decoding a PNG in strips


@contextmanager
def _open_image(
    fileobj: ImageSource,
    formats: tuple[str, ...],
    max_pixels: int,
    max_bytes: int,
) -> Iterator[_Source]:
    """Open an upload through every check that needs no pixel decoding."""
    stream, owned = _stream(fileobj, max_bytes)
    try:
        head = stream.read(32)
        if not head:
            raise CorruptImage("The file is empty.")
        sniffed = _sniff(head)
        if sniffed is not None and not _accepts(formats, sniffed):
            raise UnsupportedFormat(_unsupported_message(sniffed, formats))
        with _translate_errors():
            image = _pillow_open(stream, formats, sniffed)
            fmt = "JPEG" if image.format == "MPO" else str(image.format)
            if fmt not in formats:
                raise UnsupportedFormat(_unsupported_message(fmt, formats))
            size, frames = image.size, getattr(image, "n_frames", 1)
            canvas = size
            if fmt == "GIF":
                stream.seek(0)
                canvas, frames = _gif_canvas(stream.read(), size)
            _check_pixels(canvas, max_pixels)
        yield _Source(image=image, format=fmt, size=size, frames=frames, stream=stream)
    finally:
        if owned:
            stream.close()


def _stream(fileobj: ImageSource, max_bytes: int) -> tuple[BinaryIO, bool]:
    """Return a seekable stream at offset 0 after checking the byte limit.

    Streams that cannot seek are read into memory, never past the limit.
    """
    if isinstance(fileobj, bytes):
        if len(fileobj) > max_bytes:
            raise FileTooLarge(_too_large_message(len(fileobj), max_bytes))
        return io.BytesIO(fileobj), True
    if isinstance(fileobj, str | os.PathLike):
        stream: BinaryIO = open(fileobj, "rb")  # noqa: SIM115 (closed by caller)
        size = os.fstat(stream.fileno()).st_size
        if size > max_bytes:
            stream.close()
            raise FileTooLarge(_too_large_message(size, max_bytes))
        return stream, True
    try:
        fileobj.seek(0, os.SEEK_END)
        size = fileobj.tell()
        fileobj.seek(0)
    except (AttributeError, OSError, io.UnsupportedOperation):
        data = _read_at_most(fileobj, max_bytes + 1)
        if len(data) > max_bytes:
            raise FileTooLarge(_too_large_message(len(data), max_bytes)) from None
        return io.BytesIO(data), True
    if size > max_bytes:
        raise FileTooLarge(_too_large_message(size, max_bytes))
    return fileobj, False


def _read_at_most(fileobj: BinaryIO, limit: int) -> bytes:
    """Read to the end or to limit bytes: pipes and sockets return short reads."""
    chunks, total = [], 0
    while total < limit and (chunk := fileobj.read(min(1 << 20, limit - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _pillow_open(
    stream: BinaryIO, formats: tuple[str, ...], sniffed: str | None
) -> Image.Image:
    """Image.open restricted to the allowlist, with a sentence for each failure."""
    if "HEIF" in formats and sniffed in ("HEIF", None):
        _register_heif()
    # Pillow refuses a format it has no plugin for, and HEIF's is registered
    # only once a file may be one.
    openers = [name for name in formats if name != "HEIF" or "HEIF" in Image.OPEN]
    try:
        return Image.open(stream, formats=openers)
    except UnidentifiedImageError:
        if sniffed is None:
            raise UnsupportedFormat(_unsupported_message(None, formats)) from None
        name = _display(sniffed)
        raise CorruptImage(
            f"The file looks like a {name} image, but its header is damaged "
            "or invalid, so it cannot be read."
        ) from None


@functools.cache
def _register_heif() -> None:
    """Let Pillow open HEIC/HEIF as format "HEIF" (libheif decodes it, 10 and
    12 bits to 8; pillow-heif's AVIF is not used: Pillow's is). Only once a
    file may be one: libheif and its codecs cost a process ~11 MiB."""
    import pillow_heif

    pillow_heif.register_heif_opener(
        thumbnails=False, depth_images=False, aux_images=False
    )


def _sniff(head: bytes) -> str | None:
    return next((name for name, matches in _SIGNATURES if matches(head)), None)


def _accepts(formats: tuple[str, ...], fmt: str) -> bool:
    return fmt in formats or (fmt == "MPO" and "JPEG" in formats)


def _display(fmt: str) -> str:
    return _DISPLAY_NAMES.get(fmt, fmt)


def _unsupported_message(fmt: str | None, formats: tuple[str, ...]) -> str:
    accepted = ", ".join(_display(f) for f in formats)
    if fmt is None:
        return (
            "This file is not an image in a format we accept. "
            f"Accepted formats: {accepted}."
        )
    return f"Unsupported image format: {_display(fmt)}. Accepted formats: {accepted}."


def _too_large_message(size: int, max_bytes: int) -> str:
    return (
        f"The file is {_human_bytes(size)}; "
        f"the largest accepted upload is {_human_bytes(max_bytes)}."
    )


def _human_bytes(count: int) -> str:
    if count >= 2**20:
        return f"{count / 2**20:.1f} MB"
    if count >= 2**10:
        return f"{count / 2**10:.1f} KB"
    return f"{count} bytes"


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise DecompressionBomb(
            f"The image is too large: {width:,} x {height:,} pixels "
            f"({width * height / 1e6:,.1f} megapixels) is more than the limit "
            f"of {max_pixels / 1e6:,.1f} megapixels."
        )


_GIF_MARKERS = re.compile(rb"[!,;]")


def _gif_canvas(data: bytes, size: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """Walk a GIF's blocks without decoding: the canvas all frames need, and frames.

    Pillow grows the image to contain every frame's extent when it seeks, so a
    later frame can claim gigapixels that a first-frame check never sees.
    """
    width, height = size
    frames = 0
    pos = 13
    if len(data) > 10 and data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)
    while (found := _GIF_MARKERS.search(data, pos)) is not None:
        marker, pos = found.group(), found.end()
        if marker == b";":
            break
        if marker == b"!":
            pos = _skip_sub_blocks(data, pos + 1)
            continue
        if pos + 9 > len(data):
            break
        left, top, w, h, flags = struct.unpack_from("<4HB", data, pos)
        width, height = max(width, left + w), max(height, top + h)
        frames += 1
        if frames > MAX_FRAMES:
            raise DecompressionBomb(
                f"The animation has more than {MAX_FRAMES:,} frames, "
                "more than we accept."
            )
        pos += 9
        if flags & 0x80:
            pos += 3 << ((flags & 7) + 1)
        pos = _skip_sub_blocks(data, pos + 1)  # + 1: the LZW minimum code size
    return (width, height), max(frames, 1)


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Turn whatever Pillow raises into an `ImageRejected` with a plain sentence."""
    try:
        yield
    except ImageRejected:
        raise
    except MemoryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        logger.info("Image refused as a decompression bomb: %s", exc)
        raise DecompressionBomb(
            "The image declares far more pixels than we accept, as a "
            "decompression bomb would."
        ) from exc
    except Exception as exc:
        text = str(exc)
        logger.info("Image refused as corrupt: %s: %s", type(exc).__name__, text)
        if "Decompressed data too large" in text or "Too much memory" in text:
            raise DecompressionBomb(
                "The image carries compressed metadata that expands to an "
                "excessive size, as a decompression bomb would."
            ) from exc
        if "truncated" in text.lower():
            raise CorruptImage(
                "The image file is truncated: it ends before all of its image "
                "data. Please upload the complete file."
            ) from exc
        raise CorruptImage(
            "The image file is damaged and its image data cannot be decoded."
        ) from exc


# --- Decoding once, at the scale the largest output needs -------------------

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Image.thumbnail's own filter and gap: bicubic, after reduce() while the
# image is 2x or more too big. Lanczos costs a third more and, measured
# against thumbnail() of the full image, comes out no closer.
_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = 2.0


def _prepare(source: _Source, bound: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode once and return the largest output's pixels plus the oriented size.

    Everything costly that is per image rather than per output happens at the
    largest output size: orientation (12 MP rotate ~60 ms, 1600 px ~5 ms) and
    the colour conversion.
    """
    work, orientation, full = _decode_shrunk(source, bound)
    icc = source.image.info.get("icc_profile")
    if orientation in _TRANSPOSE:
        work = work.transpose(_TRANSPOSE[orientation])
    work = _to_sdr(work, source.image.info.get("nclx_profile"))
    work = _drop_opaque_alpha(_to_srgb(work, icc))
    work.info = {}  # save() would copy a leftover comment into the output
    return work, full


def _decode_shrunk(
    source: _Source, bound: int
) -> tuple[Image.Image, int, tuple[int, int]]:
    """Decode at the largest output's size: (pixels as stored, orientation, full size).

    JPEG decodes at a reduced scale (draft), a plain PNG a strip at a time so
    that the full-size image never exists (46 MiB for 12 MP RGBA); anything
    else is decoded whole and then shrunk.
    """
    image = source.image
    spans = png_strips.idat_spans(source.image, source.stream)
    if source.format != "JPEG" and spans is None:
        image.load()  # Pillow reads a PNG's trailing EXIF, XMP, text while loading
    orientation = _orientation(image)
    full = _oriented(source.size, orientation)
    target = _oriented(_fit(full, bound), orientation)
    if spans is not None and target != image.size:
        plan = _ShrinkPlan(image.mode, image.size, target)
        strips = png_strips.decode(
            source.stream, spans, plan.mode, plan.size[0], plan.windows(), plan.halo
        )
        work = _shrink_strips(strips, plan)
        return work, orientation, full
    if source.format == "JPEG" and target != image.size:
        image.draft(None, target)
    image.load()
    work = _shrink_decoded(_resizable(image), target)
    if work is not image:
        _release(image)
    return work, orientation, full


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8); damaged EXIF is ignored, not fatal.

    Image.Image.getexif reads what the headers gave; a PNG's own getexif
    would decode the whole image first to look for trailing chunks.
    """
    try:
        value = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # metadata must never fail the job
        logger.info("Ignoring unreadable EXIF: %s: %s", type(exc).__name__, exc)
        return 1
    return value if value in _TRANSPOSE else 1


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Swap width and height for the orientations that turn by 90 degrees."""
    return (size[1], size[0]) if orientation >= 5 else size


def _fit(size: tuple[int, int], bound: int) -> tuple[int, int]:
    """The size within a bound x bound box, as Image.thumbnail rounds it; no upscale."""
    width, height = size
    if width <= bound and height <= bound:
        return size
    aspect = width / height
    if height >= width:
        return _round_aspect(bound * aspect, lambda n: abs(aspect - n / bound)), bound
    return bound, _round_aspect(
        bound / aspect, lambda n: 0 if n == 0 else abs(aspect - bound / n)
    )


def _round_aspect(number: float, key: Callable[[int], float]) -> int:
    return max(min(math.floor(number), math.ceil(number), key=key), 1)


def _resizable(image: Image.Image) -> Image.Image:
    """Bring any decoded mode to L, LA, RGB, RGBA or CMYK, keeping transparency."""
    mode = image.mode
    transparent = image.has_transparency_data
    if mode in ("1", "L", "RGB") and transparent:
        return image.convert("RGBA")
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_to_eight(image)
    return image.convert("RGBA" if transparent else "RGB")


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    """Map 16-bit grey to 8 bits by its effective bit depth, keeping tRNS.

    A plain convert() clips everything above 255 to white. Dividing by 257
    is right for full-range data, but 16-bit files often hold 8, 10 or 12-bit
    values, which would then come out black: scale by the smallest of those
    depths that holds the brightest pixel.
    """
    wide = image if image.mode == "I" else image.convert("I")
    brightest = max(0, int(wide.getextrema()[1]))
    bits = next((b for b in (8, 10, 12) if brightest < 1 << b), 16)
    grey = wide.point(_depth_lut(bits), "L")
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return grey
    mask = [255] * 65536
    mask[transparent & 0xFFFF] = 0
    return Image.merge("LA", (grey, wide.point(mask, "L")))


@functools.lru_cache(maxsize=4)
def _depth_lut(bits: int) -> tuple[int, ...]:
    top = (1 << bits) - 1
    return tuple(min(255, round(v * 255 / top)) for v in range(65536))


def _shrink(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize down to size as Image.thumbnail does: reduce() by 2x steps, bicubic."""
    if image.size == size:
        return image
    return image.resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP)


def _shrink_decoded(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The first and biggest step, from the decoded image to the largest output.

    As _ShrinkPlan.factor says (JPEG mostly arrives already reduced by
    draft()). Alpha: premultiplied a strip at a time, since Pillow
    premultiplies a whole copy (46 MiB more for 12 MP RGBA).
    """
    if image.size == size:
        return image
    plan = _ShrinkPlan(image.mode, image.size, size)
    if image.mode in _PREMULTIPLIED:
        return _shrink_strips(_cropped_strips(image, plan), plan)
    return _shrink(image.reduce(plan.factor) if plan.factor >= 2 else image, size)


_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}
# Bytes of source pixels per strip: a strip is decoded, premultiplied and
# reduced in a few copies of this size (4000 px RGBA: 131 rows).
_STRIP_BYTES = 2 << 20


@dataclass(frozen=True)
class _ShrinkPlan:
    """Shrink size to target as box reduce() by factor, then bicubic, in strips.

    Each strip of source rows carries `halo` rows of the one above, enough
    for the bicubic filter of every output row it completes, and resize
    (box=...) places each band exactly. The result is a whole resize's but
    for rounding: Pillow picks the order of its two passes by the source's
    height, and a strip is shorter than the image.
    """

    mode: str
    size: tuple[int, int]
    target: tuple[int, int]

    @functools.cached_property
    def factor(self) -> int:
        """The whole factor: box-reduce, then bicubic under 2x.

        Three times faster than bicubic alone on a 12 MP PNG. On alpha the
        box filter costs WebP's lossless alpha plane ~8% more bytes at
        1600 px, which _WEBP_ALPHA's lossy alpha more than wins back.
        """
        (width, height), (out_width, out_height) = self.size, self.target
        return max(1, min(width // out_width, height // out_height))

    @functools.cached_property
    def scale(self) -> float:
        """Reduced source rows per output row."""
        return -(-self.size[1] // self.factor) / self.target[1]

    @functools.cached_property
    def halo(self) -> int:
        """Source rows one output row can read: bicubic reaches 2 pixels out."""
        return (2 * math.ceil(2 * max(self.scale, 1.0)) + 4) * self.factor

    @functools.cached_property
    def rows(self) -> int:
        """Source rows per strip: a multiple of factor, well over the halo."""
        rows = _STRIP_BYTES // (self.size[0] * len(self.mode))
        return -(-max(rows, 2 * self.halo) // self.factor) * self.factor

    def windows(self) -> Iterator[tuple[int, int]]:
        """The (top, bottom) source rows of each strip, top to bottom."""
        return png_strips.windows(self.size[1], self.rows, self.halo)

    def reach(self, row: int) -> int:
        """The source row below the last one output row reads, with one to spare."""
        center = (row + 0.5) * self.scale
        end = int(center + 2 * max(self.scale, 1.0) + 0.5) + 1
        return min(self.size[1], end * self.factor)

    def ready(self, bottom: int) -> int:
        """How many output rows the source rows above bottom complete."""
        if bottom >= self.size[1]:
            return self.target[1]
        return bisect.bisect_right(range(self.target[1]), bottom, key=self.reach)

    def shrink(self, strip: Image.Image, top: int, first: int, end: int) -> Image.Image:
        """Output rows first to end from a strip whose first row is source row top."""
        premultiplied = _PREMULTIPLIED.get(self.mode)
        work = strip.convert(premultiplied) if premultiplied else strip
        if self.factor > 1:
            work = work.reduce(self.factor)
        offset = top // self.factor
        box = (0, first * self.scale - offset, work.width, end * self.scale - offset)
        part = work.resize((self.target[0], end - first), _RESAMPLE, box=box)
        return part.convert(self.mode) if premultiplied else part


def _shrink_strips(
    strips: Iterable[tuple[int, Image.Image]], plan: _ShrinkPlan
) -> Image.Image:
    """Assemble the target from (top row, strip) pairs that follow plan.windows()."""
    shrunk = Image.new(plan.mode, plan.target, None)  # every row is pasted
    done = 0
    for top, strip in strips:
        end = plan.ready(top + strip.height)
        if end > done:
            shrunk.paste(plan.shrink(strip, top, done, end), (0, done))
            done = end
    return shrunk


def _cropped_strips(
    image: Image.Image, plan: _ShrinkPlan
) -> Iterator[tuple[int, Image.Image]]:
    for top, bottom in plan.windows():
        yield top, image.crop((0, top, image.width, bottom))


def _release(image: Image.Image) -> None:
    """Free a decoded image's pixels now rather than when the caller lets go.

    Image.Image.close, not ImageFile.close: that one would also close the
    caller's file object.
    """
    Image.Image.close(image)


def _drop_opaque_alpha(image: Image.Image) -> Image.Image:
    """An alpha channel that is opaque everywhere only costs bytes and time."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema() == (
        255,
        255,
    ):
        return image.convert(image.mode[:-1])
    return image


# --- HDR: PQ and HLG to SDR -----------------------------------------------------

# H.273 transfer characteristics (in a HEIF's nclx colour box).
_PQ, _HLG = 16, 18
# SDR white (BT.2408's reference white) and the brightest highlight kept, nits.
_SDR_WHITE, _HDR_PEAK = 203.0, 1000.0


def _to_sdr(image: Image.Image, nclx: dict | None) -> Image.Image:
    """Tone-map a PQ or HLG image (already 8 bits) to SDR sRGB-encoded values;
    anything else is returned as it is. Per channel, through a lookup table:
    the decoder's 8 bits keep the curve's shape, and BT.2020's wider gamut is
    not mapped (colours come out a little less saturated)."""
    transfer = (nclx or {}).get("transfer_characteristics")
    if transfer not in (_PQ, _HLG) or image.mode not in ("RGB", "RGBA"):
        return image
    lut = _sdr_lut(transfer)
    bands = len(image.getbands())
    identity = list(range(256))
    return image.point(lut * 3 + identity * (bands - 3))


@functools.lru_cache(maxsize=2)
def _sdr_lut(transfer: int) -> list[int]:
    """8-bit PQ or HLG code values to 8-bit sRGB ones."""
    to_nits = _pq_nits if transfer == _PQ else _hlg_nits
    peak = _HDR_PEAK / _SDR_WHITE
    table = []
    for code in range(256):
        light = to_nits(code / 255) / _SDR_WHITE  # 1.0 = SDR white
        mapped = light * (1 + light / peak**2) / (1 + light)  # extended Reinhard
        table.append(round(255 * _srgb_encode(min(mapped, 1.0))))
    return table


def _pq_nits(signal: float) -> float:
    """SMPTE ST 2084's EOTF: signal (0..1) to display light in nits."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    power = signal ** (1 / m2)
    return 10000 * (max(power - c1, 0) / (c2 - c3 * power)) ** (1 / m1)


def _hlg_nits(signal: float) -> float:
    """BT.2100 HLG's inverse OETF and a 1,000-nit display's OOTF (gamma 1.2)."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    low = signal <= 0.5
    scene = signal**2 / 3 if low else (math.exp((signal - c) / a) + b) / 12
    return _HDR_PEAK * scene**1.2


def _srgb_encode(linear: float) -> float:
    if linear <= 0.0031308:
        return 12.92 * linear
    return 1.055 * linear ** (1 / 2.4) - 0.055


# --- Colour: embedded ICC profiles to sRGB ----------------------------------

_PROFILE_SPACES = {"L": "GRAY", "RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK"}
_SRGB_OUTPUT_MODES = {"L": "RGB", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB"}


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to sRGB through the embedded profile; without one assume sRGB.

    The profile is then dropped (outputs carry none), so browsers show the
    colours the original would have shown. CMYK without a profile gets
    Pillow's plain conversion.
    """
    transform = _srgb_transform(icc, image.mode) if icc else None
    if transform is not None:
        try:
            image = ImageCms.applyTransform(image, transform)
        except (ImageCms.PyCMSError, ValueError, OSError) as exc:
            logger.warning("Colour conversion failed, keeping pixels: %s", exc)
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return image


@functools.lru_cache(maxsize=8)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A cached transform from this profile to sRGB, or None to leave pixels be.

    NOCACHE makes the transform safe to share between threads.
    """
    if len(icc) > MAX_ICC_BYTES or mode not in _PROFILE_SPACES:
        logger.info("Ignoring ICC profile (%d bytes) on a %s image", len(icc), mode)
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if space != _PROFILE_SPACES[mode]:
            logger.info("Ignoring %s ICC profile on a %s image", space, mode)
            return None
        if space == "RGB" and "srgb" in profile.profile.profile_description.lower():
            return None
        return ImageCms.buildTransform(
            profile,
            ImageCms.createProfile("sRGB"),
            mode,
            _SRGB_OUTPUT_MODES[mode],
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            flags=ImageCms.Flags.NOCACHE,
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.info("Ignoring unusable ICC profile: %s", exc)
        return None


# --- Encoding ----------------------------------------------------------------

# WebP method 4 (libwebp's default) costs ~170 ms at 1600 px. Measured
# against method 4 at the spec's quality (bench/thumbnails.py): on opaque
# photos method 0 at quality - 3 keeps bytes within 10% and PSNR >= 38 dB at
# a quarter of the time, but below ~1 MP it loses too much and method 2 is
# needed. Lossless alpha costs most of the time at 1600 px (RGBA method 2
# ~240 ms, RGB alone ~65 ms) and compresses badly at low methods: method 0
# makes 1.5x the bytes. Alpha quantised to 96 levels (alpha_quality 80) takes
# method 0 to 0.97x the bytes and 46 dB on white in ~90 ms, and keeps every
# size's bytes well under 1.1x; with it, method 0 holds down to 640 px too
# (1.00x the bytes, 44 dB, ~30 ms less than method 2). libwebp leaves a plane
# with fewer levels, such as a logo's, as it is. Small images keep the
# default method.
# Rows: (minimum pixels, method, quality offset); the first match wins.
_WEBP_OPAQUE = ((1_000_000, 0, 3), (150_000, 2, 0), (0, 4, 0))
_WEBP_ALPHA = ((150_000, 0, 3), (0, 4, 0))
_WEBP_ALPHA_QUALITY = 80


# AVIF: measured against libavif's defaults (speed 6) at the spec's quality
# on the bench's photos: quality - 10 at speed 9 keeps PSNR near 38 dB at
# 160 px and above 42 dB at 1600 px in ~0.85x the bytes, 3-4x faster
# (1600 px: ~190 ms). Speed 8 costs twice the time for 1-2% fewer bytes.
_AVIF_QUALITY_OFFSET = 10
_AVIF_SPEED = 9


def _encode(image: Image.Image, spec: Spec) -> bytes:
    """Encode without metadata: no EXIF, XMP, ICC or comment reaches the output."""
    out = io.BytesIO()
    if spec.format == "JPEG":
        _flatten(image).save(out, "JPEG", quality=spec.quality, progressive=True)
    elif spec.format == "AVIF":
        quality = max(1, spec.quality - _AVIF_QUALITY_OFFSET)
        image.save(out, "AVIF", quality=quality, speed=_AVIF_SPEED)
    else:
        alpha = image.mode in ("RGBA", "LA")
        options = _webp_options(spec.quality, image.width * image.height, alpha)
        image.save(out, "WEBP", **options)
    return out.getvalue()


def _webp_options(quality: int, pixels: int, alpha: bool = False) -> dict[str, int]:
    """libwebp method and qualities for one output (see _WEBP_OPAQUE)."""
    rows = _WEBP_ALPHA if alpha else _WEBP_OPAQUE
    method, offset = next((m, o) for least, m, o in rows if pixels >= least)
    options = {"method": method, "quality": max(1, quality - offset)}
    if alpha:
        options["alpha_quality"] = _WEBP_ALPHA_QUALITY
    return options


# --- The placeholder ----------------------------------------------------------

# The long edge of the placeholder, and its WebP quality: ~200-500 bytes.
PLACEHOLDER_SIZE = 24
_PLACEHOLDER_QUALITY = 50


def _placeholder(image: Image.Image) -> tuple[str, str]:
    """A tiny preview as a data: URI, and the dominant colour as #rrggbb
    (of a few median-cut colours, the one most pixels have)."""
    out = io.BytesIO()
    image.save(out, "WEBP", quality=_PLACEHOLDER_QUALITY, method=6)
    uri = "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode()
    palette = _flatten(image).convert("RGB").quantize(4, Image.Quantize.MEDIANCUT)
    _, index = max(palette.getcolors() or [(0, 0)])
    red, green, blue = palette.getpalette()[index * 3 : index * 3 + 3]
    return uri, f"#{red:02x}{green:02x}{blue:02x}"


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite on white rather than on black."""
    if image.mode not in ("RGBA", "LA"):
        return image
    base = image.mode[:-1]
    background = Image.new(base, image.size, 255 if base == "L" else (255, 255, 255))
    background.paste(image, mask=image)  # the mask is image's alpha
    return background
