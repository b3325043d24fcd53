"""Phone formats (HEIC/HEIF, AVIF), AVIF outputs and the upload placeholder,
on files made here with pillow-heif and Pillow."""

import base64
import io
import struct

import pillow_heif
import pytest
from PIL import Image

from tests.support import BLUE, RED, decoded, encoded, near, two_colour
from thumbnails.pipeline import (
    CorruptImage,
    DecompressionBomb,
    Spec,
    UnsupportedFormat,
    inspect,
    render,
)


def largest(source: bytes, fmt: str = "JPEG") -> Image.Image:
    [rendition] = render(source, [Spec("large", 1600, fmt)])
    return decoded(rendition.data).convert("RGB")


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_are_accepted_and_rendered(fmt):
    info = inspect(encoded(two_colour(), fmt, quality=90))

    assert (info.format, info.width, info.height) == (fmt, 300, 200)
    out = largest(encoded(two_colour(), fmt, quality=90))
    assert out.size == (300, 200)
    assert near(out.getpixel((10, 10)), BLUE)
    assert near(out.getpixel((290, 190)), RED)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_the_containers_orientation_is_applied(fmt):
    # Given a landscape image stored with "rotate 90 clockwise to display"
    data = encoded(two_colour(), fmt, orientation=6, quality=90)
    # Then it is described and rendered as the portrait it displays as
    info = inspect(data)
    out = largest(data)
    assert (info.width, info.height) == (200, 300)
    assert out.size == (200, 300)
    # The blue corner (top left as stored) turns to the top right
    assert near(out.getpixel((190, 10)), BLUE)
    assert near(out.getpixel((10, 290)), RED)


def ten_bit_heif(rgb16: tuple[int, int, int], size=(64, 48), **nclx) -> bytes:
    """A 10-bit HEIF of one colour, given as 16-bit samples."""
    pixels = struct.pack("<3H", *rgb16) * (size[0] * size[1])
    heif = pillow_heif.from_bytes(mode="RGB;16", size=size, data=pixels)
    out = io.BytesIO()
    heif.save(out, quality=-1, **({"nclx_profile": nclx} if nclx else {}))
    return out.getvalue()


def test_ten_bit_heif_comes_out_as_eight_bits():
    out = largest(ten_bit_heif((40000, 20000, 10000)), "WEBP")
    assert out.mode == "RGB"
    assert near(out.getpixel((5, 5)), (155, 78, 39), tolerance=6)


def test_pq_hdr_is_tone_mapped_to_sdr():
    # Given PQ-encoded HDR grey at about SDR white (203 nits: signal ~0.58)
    signal = round(0.58 * 65535)
    pq = ten_bit_heif(
        (signal,) * 3,
        color_primaries=9,
        transfer_characteristics=16,
        matrix_coefficients=9,
        full_range_flag=1,
    )
    plain = ten_bit_heif((signal,) * 3)
    # Then it is mapped through the PQ curve, not shown as its raw signal
    mapped, raw = largest(pq).getpixel((5, 5)), largest(plain).getpixel((5, 5))
    assert near(raw, (148, 148, 148), tolerance=6)
    assert 170 <= mapped[0] <= 215  # about SDR white after the highlight knee
    assert max(mapped) - min(mapped) <= 6  # still grey


def test_a_truncated_heif_is_refused_at_upload():
    data = encoded(two_colour((400, 300)), "HEIF", quality=90)
    with pytest.raises(CorruptImage):
        inspect(data[: len(data) * 2 // 3])


def test_heif_pixel_limit_is_checked_from_the_header():
    with pytest.raises(DecompressionBomb, match="megapixels"):
        inspect(encoded(two_colour(), "HEIF"), max_pixels=10_000)


def test_an_avif_naming_the_heif_brand_is_still_avif():
    # Given an AVIF whose ftyp lists mif1 as well (most do)
    data = encoded(two_colour(), "AVIF")
    assert b"mif1" in data[:32]
    # When only HEIF is allowed, the refusal names what it is
    with pytest.raises(UnsupportedFormat, match="Unsupported image format: AVIF"):
        inspect(data, formats=("HEIF",))


def test_avif_outputs():
    source = encoded(two_colour((1200, 800)), "PNG")
    [rendition] = render(source, [Spec("medium", 640, "AVIF")])

    assert rendition.content_type == "image/avif"
    out = Image.open(io.BytesIO(rendition.data))
    assert (out.format, out.size) == ("AVIF", (640, 427))
    assert near(out.convert("RGB").getpixel((600, 400)), RED)
    assert len(rendition.data) < 20_000


def test_the_placeholder_is_a_tiny_webp_of_the_images_aspect_and_colour():
    info = inspect(encoded(two_colour((1200, 600)), "JPEG", orientation=6))

    prefix = "data:image/webp;base64,"
    assert info.placeholder.startswith(prefix)
    data = base64.b64decode(info.placeholder.removeprefix(prefix))
    assert len(data) < 1000
    preview = Image.open(io.BytesIO(data))
    assert preview.format == "WEBP"
    assert max(preview.size) <= 24
    # Portrait, as the image displays (600 x 1200)
    assert abs(preview.width / preview.height - 0.5) < 0.1
    # Most of the image is red
    red = tuple(int(info.color[i : i + 2], 16) for i in (1, 3, 5))
    assert near(red, RED)
