"""thumbnails.pipeline decoding plain PNGs a strip at a time."""

import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageChops, ImageStat

from thumbnails import pipeline, png_strips
from thumbnails.pipeline import DEFAULT_SPECS, CorruptImage, Spec, render

# Every one smaller than the test images, which are decoded only to shrink
SPECS = (
    *(spec for spec in DEFAULT_SPECS if spec.size < 1000),
    Spec("odd", 97, "WEBP"),
    Spec("tall", 230, "JPEG"),
)


@pytest.fixture(autouse=True)
def small_strips(monkeypatch):
    # Strips of a few rows, so that small images still take many of them
    monkeypatch.setattr(pipeline, "_STRIP_BYTES", 4096)


def picture(mode: str, size: tuple[int, int]) -> Image.Image:
    """Busy pixels (a gradient plus noise) and, for alpha modes, a soft alpha."""
    rnd = random.Random(7)
    width, height = size
    grey = Image.linear_gradient("L").resize(size)
    noise = Image.frombytes("L", size, rnd.randbytes(width * height))
    base = Image.blend(grey, noise, 0.3)
    image = Image.merge("RGB", (base, noise, grey)).convert(mode.rstrip("A") or "L")
    if mode.endswith("A"):
        image.putalpha(Image.radial_gradient("L").resize(size))
    return image


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    found, position = [], 8
    while position < len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        found.append((kind, data[position + 8 : position + 8 + length]))
        position += length + 12
    return found


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in parts:
        crc = zlib.crc32(kind + body)
        out.append(struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", crc))
    return b"".join(out)


def with_trailing_text(data: bytes) -> bytes:
    """The same PNG with a tEXt chunk after its pixels, which Pillow decodes whole."""
    parts = chunks(data)
    return assemble([*parts[:-1], (b"tEXt", b"Comment\0after the pixels"), parts[-1]])


def with_idat(data: bytes, change) -> bytes:
    """The same PNG with its compressed pixels changed, in valid chunks."""
    parts = [(kind, body) for kind, body in chunks(data) if kind != b"IDAT"]
    idat = b"".join(body for kind, body in chunks(data) if kind == b"IDAT")
    return assemble([*parts[:-1], (b"IDAT", change(idat)), parts[-1]])


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGB", "L"])
@pytest.mark.parametrize("size", [(1000, 750), (333, 1001), (2000, 300)])
def test_strips_hold_the_rows_of_a_whole_decode(mode, size):
    # Given a PNG, its plan for a thumbnail, and Pillow's decode of the whole
    data = png(picture(mode, size))
    whole = Image.open(io.BytesIO(data))
    whole.load()
    plan = pipeline._ShrinkPlan(mode, size, pipeline._fit(size, 160))
    # When it is decoded in strips
    with pipeline._open_image(data, ("PNG",), 10**8, 10**8) as source:
        spans = png_strips.idat_spans(source.image, source.stream)
        windows = plan.windows()
        strips = list(
            png_strips.decode(source.stream, spans, mode, size[0], windows, plan.halo)
        )
    # Then the strips are the plan's windows, each row as Pillow decodes it
    assert [(top, top + strip.height) for top, strip in strips] == list(plan.windows())
    assert len(strips) > 1
    for top, strip in strips:
        expected = whole.crop((0, top, size[0], top + strip.height))
        assert strip.tobytes() == expected.tobytes()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGB", "L"])
@pytest.mark.parametrize("size", [(1000, 750), (333, 1001), (7000, 40)])
def test_strips_render_as_a_whole_decode(mode, size, monkeypatch):
    # Given a PNG and the same pixels in a PNG that Pillow must decode whole
    data = png(picture(mode, size))
    whole = with_trailing_text(data)
    strips = []
    decode = png_strips.decode
    monkeypatch.setattr(
        png_strips, "decode", lambda *args: strips.append(1) or decode(*args)
    )
    # When both are rendered
    in_strips = list(render(data, SPECS))
    assert strips == [1]  # (the first one only was decoded in strips)
    decoded_whole = list(render(whole, SPECS))
    assert strips == [1]
    # Then alpha images, shrunk by strips either way, come out byte for byte
    # the same; opaque ones, which Pillow resizes whole, within rounding:
    # Pillow orders its two resampling passes by the source's height, and
    # the clipping between the passes shows on pure noise (the green band).
    for a, b in zip(in_strips, decoded_whole, strict=True):
        if mode.endswith("A"):
            assert a.data == b.data
        else:
            assert mean_difference(decoded(a.data), decoded(b.data)) < 3


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    a, b = a.convert("RGB"), b.convert("RGB")
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_orientation_before_the_pixels_is_applied():
    # Given a 300x100 RGBA PNG, red on the left, stored with orientation 6
    image = picture("RGBA", (300, 100))
    image.paste((255, 0, 0, 255), (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "PNG", exif=exif)
    # When it is rendered smaller
    [rendition] = render(out.getvalue(), [Spec("t", 150, "JPEG")])
    # Then it is turned 90 degrees clockwise: 50x150 with red on top
    result = Image.open(io.BytesIO(rendition.data))
    assert result.size == (50, 150)
    red, _, blue = result.getpixel((25, 10))
    assert red > 200 and blue < 60


def first_rendition(data: bytes) -> None:
    next(render(data))


def inspected(data: bytes) -> None:
    pipeline.inspect(data)


# Upload-time inspection and the worker's render both decode in strips.
each_entry_point = pytest.mark.parametrize(
    "decode", [inspected, first_rendition], ids=["inspect", "render"]
)


def test_inspect_checks_a_plain_png_a_strip_at_a_time(monkeypatch):
    # Given a plain RGBA PNG
    data = png(picture("RGBA", (1200, 900)))
    calls = []
    decode = png_strips.decode
    monkeypatch.setattr(
        png_strips, "decode", lambda *args, **kw: calls.append(1) or decode(*args, **kw)
    )
    # When it is inspected / Then it was decoded in strips, and described
    info = pipeline.inspect(data)
    assert calls == [1]
    assert (info.width, info.height, info.has_alpha) == (1200, 900, True)


@each_entry_point
def test_pixel_data_that_ends_early_is_refused_as_truncated(decode):
    # Given a PNG whose chunks are whole but whose pixel data stops halfway
    data = with_idat(png(picture("RGBA", (400, 300))), lambda z: z[: len(z) // 2])
    # When it is decoded / Then it is refused as truncated, before any output
    with pytest.raises(CorruptImage, match="truncated"):
        decode(data)


@each_entry_point
def test_damaged_pixel_data_is_refused(decode):
    # Given a PNG whose compressed pixels do not start as a zlib stream
    data = with_idat(png(picture("RGB", (400, 300))), lambda z: b"\0" + z[1:])
    # When it is decoded / Then it is refused as corrupt
    with pytest.raises(CorruptImage, match="damaged"):
        decode(data)


@each_entry_point
def test_an_unknown_row_filter_is_refused(decode):
    # Given a PNG whose 100th row names filter type 9, which does not exist
    image = picture("RGB", (400, 300))
    rows = image.tobytes()
    row_bytes = 400 * 3
    scanlines = b"".join(
        (b"\x09" if y == 100 else b"\0") + rows[y * row_bytes : (y + 1) * row_bytes]
        for y in range(300)
    )
    data = with_idat(png(image), lambda _: zlib.compress(scanlines))
    # When it is decoded / Then it is refused as corrupt
    with pytest.raises(CorruptImage, match="damaged"):
        decode(data)


@each_entry_point
def test_a_file_cut_inside_its_pixels_is_refused_as_truncated(decode):
    # Given a PNG file cut in half
    data = png(picture("RGBA", (400, 300)))
    # When it is decoded / Then it is refused as truncated
    with pytest.raises(CorruptImage, match="truncated"):
        decode(data[: len(data) // 2])
