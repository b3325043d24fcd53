"""thumbnails.pipeline on the shared corpus of real files and on generated images."""

import io
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from tests.support import CORPUS, ROOT, corpus_manifest, decoded, encoded
from thumbnails import pipeline
from thumbnails.pipeline import (
    DEFAULT_SPECS,
    CorruptImage,
    DecompressionBomb,
    FileTooLarge,
    ImageRejected,
    Spec,
    UnsupportedFormat,
    inspect,
    render,
)

ACCEPTED = "Accepted formats: JPEG, PNG, GIF, WebP, HEIC/HEIF, AVIF."


def _manifest() -> list:
    rows = corpus_manifest()
    if not rows:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {CORPUS}"))]
    return [pytest.param(row, id=row["file"]) for row in rows]


def corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus file {path} is missing")
    return path


def one(source, spec: Spec, **options) -> Image.Image:
    [rendition] = render(source, [spec], **options)
    return decoded(rendition.data)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    a, b = a.convert("RGB"), b.convert("RGB")
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# --- The corpus, row by row ------------------------------------------------------


@pytest.mark.parametrize("row", _manifest())
def test_corpus_file_gets_the_manifest_outcome(row):
    # Given a real-world file and what the manifest says a safe service does
    path = CORPUS / row["file"]
    expected = row["expected_action"]

    if expected == "thumbnail OK":
        # When it is inspected and rendered
        info = inspect(path)
        renditions = list(render(path))
        # Then every default spec comes out, largest first, decodable, unscaled up
        by_size = sorted(DEFAULT_SPECS, key=lambda spec: spec.size, reverse=True)
        assert [r.spec for r in renditions] == by_size
        for rendition in renditions:
            image = decoded(rendition.data)
            assert image.format == rendition.spec.format
            assert image.size == (rendition.width, rendition.height)
            assert max(image.size) == min(
                rendition.spec.size, max(info.width, info.height)
            )
            # ... with the displayed (oriented) aspect
            assert (image.width >= image.height) == (info.width >= info.height)
            assert rendition.content_type == f"image/{rendition.format.lower()}"
        return

    refusals = {
        "refuse format": UnsupportedFormat,
        "reject as bomb": DecompressionBomb,
        "reject with clear error": CorruptImage,
    }
    # When it is inspected, or rendered without inspection
    for attempt in (lambda: inspect(path), lambda: list(render(path))):
        with pytest.raises(refusals[expected]) as caught:
            attempt()
        # Then the refusal is a sentence a person understands, with a code
        message = str(caught.value)
        assert message[0].isupper() and message.endswith("."), message
        assert "cannot identify" not in message and "Errno" not in message
        assert caught.value.code == refusals[expected].code
        if expected == "refuse format":
            assert message.endswith(ACCEPTED)


def test_refusal_names_a_recognised_format():
    # Given an EPS file (opening it with Pillow would run Ghostscript)
    path = corpus("zero_bb.eps")
    # When it is inspected / Then the refusal names the format and the allowlist
    with pytest.raises(UnsupportedFormat, match=r"^Unsupported image format: EPS\."):
        inspect(path)


@pytest.mark.parametrize("name", ["decompression_bomb_extents.gif"])
def test_gif_frame_beyond_the_first_is_checked(name):
    # Given a GIF whose first frame is small and whose second claims 4 Gpx
    path = corpus(name)
    first = Image.open(path)
    assert first.width * first.height <= pipeline.DEFAULT_MAX_PIXELS
    # When it is inspected / Then the walk over all frames catches it
    with pytest.raises(DecompressionBomb, match="megapixels"):
        inspect(path)


# --- Orientation, colour, modes ----------------------------------------------


@pytest.mark.parametrize(
    "name",
    [f"hopper_orientation_{n}.jpg" for n in range(2, 9)]
    + ["hopper_orientation_6.webp"],
)
def test_exif_orientation_is_applied_to_pixels(name):
    # Given a rotated/mirrored hopper whose EXIF says how to show it
    reference = Image.open(corpus("hopper.jpg")).convert("RGB").resize((64, 64))
    raw = Image.open(corpus(name)).convert("RGB").resize((64, 64))
    assert mean_difference(raw, reference) > 30  # the raw pixels really differ
    # When it is rendered
    out = one(corpus(name), Spec("t", 64, "JPEG", quality=95))
    # Then it looks like the upright original
    assert mean_difference(out, reference) < 15


def test_orientation_swaps_width_and_height():
    # Given a 2x1 JPEG tagged "rotate 90"
    path = corpus("orientation_rectangle.jpg")
    # When it is inspected and rendered / Then both report 1x2
    info = inspect(path)
    assert (info.width, info.height) == (1, 2)
    assert one(path, Spec("t", 160, "WEBP")).size == (1, 2)


def test_orientation_is_applied_from_generated_exif():
    # Given a 300x100 image, red on the left, stored with orientation 6
    image = Image.new("RGB", (300, 100), "blue")
    image.paste((255, 0, 0), (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(image, "JPEG", quality=95, exif=exif)
    # When it is rendered
    out = one(data, Spec("t", 150, "JPEG"))
    # Then it is turned 90 degrees clockwise: 50x150 with red on top
    assert out.size == (50, 150)
    red, _, blue = out.getpixel((25, 10))
    assert red > 200 and blue < 60


def test_colour_profile_is_converted_to_srgb():
    # Given saturated patches tagged with a wide-gamut profile (ColorMatch RGB)
    icc = Image.open(corpus("xmp_tags_orientation.png")).info["icc_profile"]
    patches = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (230, 180, 140)]
    image = Image.new("RGB", (40 * len(patches), 40))
    for index, colour in enumerate(patches):
        image.paste(colour, (40 * index, 0, 40 * index + 40, 40))
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    expected = ImageCms.profileToProfile(
        image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    # When it is rendered
    out = one(encoded(image, icc_profile=icc), Spec("t", 160, "JPEG", quality=95))
    # Then the colours match the sRGB conversion, not the raw numbers
    assert mean_difference(out, expected) < 4
    assert mean_difference(out, image) > 8
    # ... and no profile is passed on
    assert "icc_profile" not in out.info


def test_alpha_is_kept_in_webp_and_flattened_on_white_in_jpeg():
    # Given an RGBA PNG: left half fully transparent (black beneath), right red
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (100, 0, 200, 100))
    data = encoded(image)
    # When it is rendered as WebP and as JPEG
    webp = one(data, Spec("t", 100, "WEBP"))
    jpeg = one(data, Spec("t", 100, "JPEG"))
    # Then WebP keeps the transparency and JPEG shows white, not black
    assert webp.mode == "RGBA"
    assert webp.getpixel((10, 25))[3] == 0
    assert webp.getpixel((90, 25))[3] == 255
    assert min(jpeg.getpixel((10, 25))) >= 245
    assert jpeg.getpixel((90, 25))[0] > 230 and jpeg.getpixel((90, 25))[1] < 40


def test_fully_opaque_alpha_is_dropped():
    # Given an RGBA PNG whose alpha is 255 everywhere
    data = encoded(Image.new("RGBA", (64, 64), (10, 200, 30, 255)))
    # When it is rendered as WebP / Then no alpha channel is spent on it
    assert one(data, Spec("t", 64, "WEBP")).mode == "RGB"


def test_sixteen_bit_grey_is_tone_mapped_not_clipped():
    # Given a 16-bit grey ramp over the full range (convert("L") clips it white)
    width = 256
    ramp = b"".join(struct.pack("<H", x * 257) for x in range(width)) * 8
    image = Image.frombytes("I;16", (width, 8), ramp)
    assert ImageStat.Stat(image.convert("L")).mean[0] > 250  # the naive way
    # When it is rendered
    out = one(encoded(image), Spec("t", width, "JPEG", quality=95)).convert("L")
    # Then it is still a ramp from black to white
    assert out.getpixel((2, 4)) < 15 and out.getpixel((width - 3, 4)) > 240
    assert 110 < ImageStat.Stat(out).mean[0] < 145


def test_sixteen_bit_with_trns_keeps_its_picture_and_transparency():
    # Given i_trns.png: 16-bit grey holding 8-bit values, one value transparent
    path = corpus("i_trns.png")
    # When it is rendered as WebP
    out = one(path, Spec("t", 64, "WEBP"))
    # Then transparency survives and the opaque pixels are a picture, not white
    assert out.mode == "RGBA"
    alpha = out.getchannel("A")
    assert alpha.getextrema()[0] < 20
    grey = out.convert("L")
    opaque = [
        g
        for g, a in zip(
            grey.get_flattened_data(), alpha.get_flattened_data(), strict=True
        )
        if a
    ]
    assert max(opaque) - min(opaque) > 100


def test_cmyk_becomes_rgb():
    # Given a pure-cyan CMYK JPEG
    data = encoded(Image.new("CMYK", (64, 64), (255, 0, 0, 0)), "JPEG", quality=95)
    # When it is rendered as WebP / Then it is an RGB cyan
    out = one(data, Spec("t", 64, "WEBP"))
    red, green, blue = out.getpixel((32, 32))
    assert red < 30 and green > 220 and blue > 220


def test_grey_with_alpha_keeps_alpha_in_webp():
    # Given an LA PNG, grey 100, transparent on its top half
    image = Image.new("LA", (64, 64), (100, 255))
    image.paste((100, 0), (0, 0, 64, 32))
    # When it is rendered / Then WebP keeps alpha and JPEG whitens the top
    webp = one(encoded(image), Spec("t", 64, "WEBP"))
    jpeg = one(encoded(image), Spec("t", 64, "JPEG")).convert("L")
    assert webp.getpixel((32, 10))[3] == 0 and webp.getpixel((32, 50))[3] == 255
    assert jpeg.getpixel((32, 10)) > 245 and abs(jpeg.getpixel((32, 50)) - 100) < 8


def test_palette_transparency_is_kept():
    # Given a palette PNG whose index 0 is transparent (tRNS)
    image = Image.new("P", (64, 64), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(0, (0, 0, 32, 64))
    data = encoded(image, transparency=0)
    # When it is rendered
    webp = one(data, Spec("t", 64, "WEBP"))
    jpeg = one(data, Spec("t", 64, "JPEG"))
    # Then the transparent half is transparent (WebP) or white (JPEG)
    assert webp.getpixel((10, 32))[3] == 0 and webp.getpixel((50, 32))[3] == 255
    assert min(jpeg.getpixel((10, 32))) > 245 and jpeg.getpixel((50, 32))[2] > 200


def test_animation_gives_its_first_frame():
    # Given a two-frame GIF, red then blue
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    # When it is inspected and rendered / Then it counts two, shows the first
    assert inspect(data).frames == 2
    red, _, blue = one(data, Spec("t", 32, "JPEG")).getpixel((16, 16))
    assert red > 200 and blue < 50


def test_animation_with_too_many_frames_is_refused(monkeypatch):
    # Given a frame limit of 2 and a three-frame GIF
    monkeypatch.setattr(pipeline, "MAX_FRAMES", 2)
    frames = [Image.new("L", (4, 4), shade) for shade in (0, 100, 200)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    # When it is inspected / Then it is refused before any decoding
    with pytest.raises(DecompressionBomb, match="frames"):
        inspect(data)


# --- Limits and failures -----------------------------------------------------------


def test_byte_limit():
    # Given an upload one byte over the limit, as a file and as a pipe
    data = encoded(Image.linear_gradient("L"))
    limit = len(data) - 1

    class Pipe(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self.inner.readinto(memoryview(buffer)[:7])  # short reads

    # When it is inspected / Then it is refused as too large, the sizes in
    # units a person reads (a limit under a KB is not "0.0 MB")
    expected = rf"largest accepted upload is {limit} bytes\."
    for source in (io.BytesIO(data), Pipe(), data):
        with pytest.raises(FileTooLarge, match=expected) as caught:
            inspect(source, max_bytes=limit)
        assert caught.value.code == "file_too_large"
    # ... and exactly at the limit it is accepted, pipe included
    assert inspect(Pipe(), max_bytes=len(data)).width == 256


def test_pixel_limit_is_checked_before_decoding():
    # Given a 100x100 PNG and a 5,000-pixel limit
    data = encoded(Image.new("RGB", (100, 100)))
    # When it is inspected or rendered / Then both refuse it as a bomb
    with pytest.raises(DecompressionBomb, match="100 x 100 pixels"):
        inspect(data, max_pixels=5000)
    with pytest.raises(DecompressionBomb):
        list(render(data, max_pixels=5000))
    assert inspect(data, max_pixels=10_000).width == 100


def test_truncated_upload_fails_before_any_output():
    # Given a JPEG cut in half
    data = encoded(Image.radial_gradient("L").resize((400, 300)), "JPEG")
    cut = data[: len(data) // 2]
    # When it is inspected / Then it is refused at upload time
    with pytest.raises(CorruptImage, match="truncated"):
        inspect(cut)
    # When it is rendered / Then the very first rendition fails: no half result
    renditions = render(cut)
    with pytest.raises(CorruptImage):
        next(renditions)


def test_format_outside_a_custom_allowlist_is_refused():
    # Given a PNG and an allowlist of JPEG only
    data = encoded(Image.new("RGB", (8, 8)))
    # When it is inspected / Then the refusal names PNG and lists only JPEG
    with pytest.raises(UnsupportedFormat) as caught:
        inspect(data, formats=("JPEG",))
    assert str(caught.value) == (
        "Unsupported image format: PNG. Accepted formats: JPEG."
    )


def test_mpo_is_accepted_as_jpeg():
    # Given an MPO (a JPEG with a second frame) and a JPEG-only allowlist
    path = corpus("sugarshack.mpo")
    # When it is inspected / Then it is a JPEG of two frames
    info = inspect(path, formats=("JPEG",))
    assert (info.format, info.frames) == ("JPEG", 2)


def test_spec_is_validated():
    # Given specs in an unknown format, of no size, of impossible quality
    # When they are made / Then each says what is wrong
    for args in (("x", 100, "PNG"), ("x", 0, "JPEG"), ("x", 100, "JPEG", 0)):
        with pytest.raises(ValueError, match="Spec"):
            Spec(*args)


# --- Output properties -----------------------------------------------------------


def test_never_upscaled():
    # Given an image smaller than every spec
    data = encoded(Image.new("RGB", (50, 30), "green"))
    # When it is rendered / Then each output keeps the original size
    sizes = {(r.width, r.height) for r in render(data)}
    assert sizes == {(50, 30)}


def test_long_edge_and_aspect():
    # Given a 3000x1000 JPEG
    data = encoded(Image.new("RGB", (3000, 1000), "white"), "JPEG")
    # When it is rendered / Then each long edge is the spec's, aspect kept
    sizes = {r.spec.size: (r.width, r.height) for r in render(data)}
    assert sizes == {1600: (1600, 533), 640: (640, 213), 160: (160, 53)}


def test_metadata_is_stripped():
    # Given a JPEG with EXIF, XMP, a comment and an sRGB profile
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {2: (1.0, 2.0, 3.0)}  # GPS
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encoded(
        Image.new("RGB", (300, 200), "orange"),
        "JPEG",
        exif=exif,
        comment=b"secret comment",
        xmp=b"<x:xmpmeta>secret</x:xmpmeta>",
        icc_profile=srgb,
    )
    assert b"SecretCam" in data  # the input really carries it
    # When it is rendered
    for rendition in render(data):
        # Then no output carries any of it, and JPEGs are progressive
        assert b"secret" not in rendition.data.lower()
        assert b"Exif" not in rendition.data and b"ICC_PROFILE" not in rendition.data
        info = decoded(rendition.data).info
        assert not {"exif", "xmp", "icc_profile", "comment"} & set(info)
        if rendition.format == "JPEG":
            assert info.get("progressive")


def test_rendering_is_deterministic():
    # Given one input
    image = Image.radial_gradient("L").resize((900, 700)).convert("RGB")
    data = encoded(image, "JPEG", quality=90)
    # When it is rendered twice / Then the bytes are identical
    first = [r.data for r in render(data)]
    assert first == [r.data for r in render(io.BytesIO(data))]


def test_inspect_reports_what_it_saw():
    # Given a palette PNG with transparency, 40x30
    image = Image.new("P", (40, 30))
    data = encoded(image, transparency=0)
    # When it is inspected / Then format, size, frames, mode and alpha are right
    info = inspect(io.BytesIO(data))
    assert (info.format, info.width, info.height, info.frames) == ("PNG", 40, 30, 1)
    assert info.mode == "P" and info.has_alpha


def test_rejections_are_value_errors_with_codes():
    # Given the exception tree / Then callers can catch one base, read a code
    for cls in (UnsupportedFormat, DecompressionBomb, CorruptImage, FileTooLarge):
        assert issubclass(cls, ImageRejected) and issubclass(cls, ValueError)
        assert cls.code and cls.code != ImageRejected.code


def test_pipeline_module_does_not_import_django():
    # Given a fresh interpreter / When the pipeline is imported alone
    code = "import sys, thumbnails.pipeline; print('django' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    # Then Django was never imported
    assert done.stdout.strip() == "False", done.stderr


def test_bench_smoke_runs():
    # Given the benchmark in its quick mode
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "thumbnails.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    # When it runs / Then it prints its table and verdicts and exits 0
    assert done.returncode == 0, done.stderr[-2000:]
    assert "naive" in done.stdout and "ours" in done.stdout
    assert "PASS" in done.stdout or "FAIL" in done.stdout
