"""Benchmark the thumbnail pipeline against naive Pillow and pyvips.

    python bench/thumbnails.py [--quick] [--repeat N]

Generates deterministic photo-like 12 MP JPEGs (some with EXIF orientation 6
and 8), 4000x3000 RGBA PNGs and 12 MP HEICs (iPhone's format), then makes the
same outputs (JPEG and WebP at 160, 640 and 1600 px; and, from the JPEGs, AVIF
at those sizes) three ways, each variant and image kind in a fresh subprocess
so that its peak RSS is its own:

- naive: open, exif_transpose, thumbnail() of a copy per size, default
  encoder settings at the spec's quality;
- ours: thumbnails.pipeline.render with DEFAULT_SPECS;
- pyvips: shrink-on-load thumbnail to 1600, then each smaller size from the
  next larger one, with our encoder settings (the fast reference).

Prints CPU and wall time per image, peak RSS, PSNR and bytes of each output
against naive, and PASS/FAIL against the issue's targets. Always exits 0:
timings on shared machines are noisy. Not a test; `--quick` is for smoke runs.
"""

import argparse
import io
import json
import logging
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is named like the thumbnails package: import the package, not it.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps, ImageStat  # noqa: E402

from thumbnails import pipeline  # noqa: E402

logger = logging.getLogger("bench.thumbnails")

VARIANTS = ("naive", "ours", "pyvips")
TARGET_SPEEDUP = 2.0
TARGET_PEAK_MIB = 80
TARGET_PSNR_DB = 38.0
TARGET_BYTES_RATIO = 1.10


# --- Generated input ----------------------------------------------------------


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """Deterministic photo-like RGB content: gradients, soft blobs, shapes, grain."""
    rnd = random.Random(seed)
    width, height = size
    bicubic = Image.Resampling.BICUBIC
    ramp = Image.linear_gradient("L")
    bands = (
        ramp.rotate(rnd.uniform(0, 360)).resize(size, bicubic),
        Image.radial_gradient("L").resize(size, bicubic),
        ramp.transpose(Image.Transpose.ROTATE_90).resize(size, bicubic),
    )
    image = Image.merge("RGB", bands)
    soft = image.resize((max(1, width // 8), max(1, height // 8)))
    draw = ImageDraw.Draw(soft)
    for _ in range(40):
        x, y = rnd.randrange(soft.width), rnd.randrange(soft.height)
        r = rnd.randrange(2, max(3, soft.width // 4))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rnd))
    soft = soft.filter(ImageFilter.GaussianBlur(6)).resize(size, bicubic)
    image = Image.blend(image, soft, 0.7)
    draw = ImageDraw.Draw(image)
    reach = max(4, width // 10)
    for _ in range(60):
        x, y = rnd.randrange(width), rnd.randrange(height)
        corners = rnd.randrange(3, 7)
        points = [
            (x + rnd.randrange(-reach, reach), y + rnd.randrange(-reach, reach))
            for _ in range(corners)
        ]
        draw.polygon(points, fill=_colour(rnd))
    image = image.filter(ImageFilter.GaussianBlur(0.8))  # lens and demosaicing
    small = (max(1, width // 16), max(1, height // 16))
    texture = _noise(rnd, "RGB", small).resize(size, bicubic)
    image = Image.blend(image, texture, 0.10)
    return Image.blend(image, _noise(rnd, "L", size).convert("RGB"), 0.03)


def graphic(seed: int, size: tuple[int, int]) -> Image.Image:
    """Deterministic RGBA content with a soft alpha, as PNG uploads tend to be."""
    rnd = random.Random(seed)
    image = photo(seed, (size[0] // 4, size[1] // 4)).resize(size)
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        r = rnd.randrange(10, max(11, size[0] // 8))
        draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=_colour(rnd))
    image.putalpha(Image.radial_gradient("L").resize(size).point(lambda v: 255 - v))
    return image


def _colour(rnd: random.Random) -> tuple[int, int, int]:
    return (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))


def _noise(rnd: random.Random, mode: str, size: tuple[int, int]) -> Image.Image:
    bands = len(mode)
    return Image.frombytes(mode, size, rnd.randbytes(size[0] * size[1] * bands))


# What a variant cannot do, and why.
NOT_RUN = {("heic", "pyvips"): "pyvips-binary's libheif has no HEVC decoder"}

# Outputs per kind: the default specs, or the same sizes as AVIF.
SPEC_SETS = {
    "default": pipeline.DEFAULT_SPECS,
    "avif": tuple(
        pipeline.Spec(name, size, "AVIF")
        for name, size in (("small", 160), ("medium", 640), ("large", 1600))
    ),
}


def generate(folder: Path, quick: bool) -> dict[str, list[Path]]:
    """Write the inputs: {"jpeg": [...], "png": [...], "heic": [...]}."""
    jpeg_size, png_size = ((1600, 1200), (1000, 750)) if quick else ((4000, 3000),) * 2
    orientations = (6,) if quick else (1, 6, 8)
    files: dict[str, list[Path]] = {"jpeg": [], "png": [], "heic": []}
    for seed, orientation in enumerate(orientations, start=1):
        path = folder / f"photo{seed}_o{orientation}.jpg"
        exif = Image.Exif()
        if orientation != 1:
            exif[0x0112] = orientation
        photo(seed, jpeg_size).save(path, "JPEG", quality=90, exif=exif)
        files["jpeg"].append(path)
    for seed in (1,) if quick else (1, 2):
        path = folder / f"graphic{seed}.png"
        graphic(seed + 100, png_size).save(path, "PNG", compress_level=1)
        files["png"].append(path)
    register_heif()
    for seed, orientation in enumerate(orientations[:2], start=1):
        path = folder / f"phone{seed}_o{orientation}.heic"
        exif = Image.Exif()
        if orientation != 1:
            exif[0x0112] = orientation
        photo(seed + 200, jpeg_size).save(path, "HEIF", quality=90, exif=exif)
        files["heic"].append(path)
    return files


def register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


# --- The three variants (run inside a worker subprocess) ----------------------

Outputs = dict[str, bytes]  # "1600.JPEG" -> encoded bytes


def run_naive(path: Path, specs) -> Outputs:
    outputs = {}
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
    for spec in sorted(specs, key=lambda s: -s.size):
        thumb = image.copy()
        thumb.thumbnail((spec.size, spec.size))
        out = io.BytesIO()
        if spec.format == "JPEG":
            _on_white(thumb).save(out, "JPEG", quality=spec.quality)
        else:
            thumb.save(out, spec.format, quality=spec.quality)
        outputs[f"{spec.size}.{spec.format}"] = out.getvalue()
    return outputs


def run_ours(path: Path, specs) -> Outputs:
    return {
        f"{r.spec.size}.{r.format}": r.data
        for r in pipeline.render(path, specs, max_bytes=1 << 30)
    }


def run_pyvips(path: Path, specs) -> Outputs:
    import pyvips

    keep = pyvips.enums.ForeignKeep.NONE
    outputs = {}
    current = None
    for spec in sorted(specs, key=lambda s: -s.size):
        if current is None:
            current = pyvips.Image.thumbnail(
                str(path), spec.size, height=spec.size, size="down"
            ).copy_memory()
        elif max(current.width, current.height) > spec.size:
            current = current.thumbnail_image(
                spec.size, height=spec.size, size="down"
            ).copy_memory()
        if spec.format == "JPEG":
            flat = current.flatten(background=255) if current.hasalpha() else current
            data = flat.jpegsave_buffer(Q=spec.quality, interlace=True, keep=keep)
        elif spec.format == "AVIF":
            data = current.heifsave_buffer(
                compression="av1",
                Q=spec.quality - pipeline._AVIF_QUALITY_OFFSET,
                effort=10 - pipeline._AVIF_SPEED,
                keep=keep,
            )
        else:
            # The same encoder settings as ours, so only the pipelines differ.
            pixels = current.width * current.height
            options = pipeline._webp_options(spec.quality, pixels, current.hasalpha())
            data = current.webpsave_buffer(
                Q=options["quality"],
                effort=options["method"],
                alpha_q=options.get("alpha_quality", 100),
                keep=keep,
            )
        outputs[f"{spec.size}.{spec.format}"] = data
    return outputs


def _on_white(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")


RUNNERS: dict[str, Callable[[Path, tuple], Outputs]] = {
    "naive": run_naive,
    "ours": run_ours,
    "pyvips": run_pyvips,
}


def worker(
    variant: str, files: list[Path], out_dir: Path, repeat: int, specs: str
) -> None:
    """Time one variant over files and print a JSON report on stdout."""
    if variant == "pyvips":
        import pyvips

        pyvips.cache_set_max(0)  # or repeats are served from the cache
    run, outputs_of = RUNNERS[variant], SPEC_SETS[specs]
    if files[0].suffix == ".heic":
        register_heif()  # naive Pillow needs the plugin; ours loads its own
    run(files[0], outputs_of)  # warm up: plugin imports, codec setup
    cpu = wall = 0.0
    for _ in range(repeat):
        for path in files:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            outputs = run(path, outputs_of)
            cpu += time.process_time() - cpu0
            wall += time.perf_counter() - wall0
            for key, data in outputs.items():
                (out_dir / f"{path.stem}.{key}").write_bytes(data)
    images = repeat * len(files)
    report = {
        "cpu_ms": 1000 * cpu / images,
        "wall_ms": 1000 * wall / images,
        "peak_mib": peak_rss_mib(),
    }
    print(json.dumps(report))


def peak_rss_mib() -> float:
    """This process' peak RSS.

    Linux keeps ru_maxrss across fork and exec, so a child started from a big
    parent would report the parent's peak: read VmHWM, which exec resets.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- Driver -------------------------------------------------------------------


def measure(
    variant: str, files: list[Path], out_dir: Path, repeat: int, specs: str
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--worker", variant, "--out", str(out_dir)]
    command += ["--repeat", str(repeat), "--specs", specs, *map(str, files)]
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}  # one core, like Pillow
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        logger.warning("%s failed:\n%s", variant, done.stderr.strip()[-2000:])
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def psnr(a: Image.Image, b: Image.Image) -> float:
    a, b = _on_white(a), _on_white(b)
    if a.size != b.size:
        b = b.resize(a.size, Image.Resampling.BICUBIC)
    squares = ImageStat.Stat(ImageChops.difference(a, b)).sum2
    mse = sum(squares) / (3 * a.width * a.height)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def compare(
    files: list[Path], out_root: Path, variant: str, specs: str
) -> dict[str, list]:
    """Per output key: [(psnr, bytes ratio) per image] of variant against naive."""
    found: dict[str, list] = {}
    for path in files:
        for spec in SPEC_SETS[specs]:
            name = f"{path.stem}.{spec.size}.{spec.format}"
            ours, naive = out_root / variant / name, out_root / "naive" / name
            if not (ours.exists() and naive.exists()):
                continue
            with Image.open(ours) as a, Image.open(naive) as b:
                quality = psnr(a, b)
            ratio = ours.stat().st_size / naive.stat().st_size
            found.setdefault(f"{spec.size} {spec.format}", []).append((quality, ratio))
    return found


def noise_floor(files: list[Path], specs: str) -> dict[str, float]:
    """Per output key, the PSNR of naive against itself with 1-LSB input noise.

    Lossy encoders are chaotic: the same settings on an input that differs by
    one level in half its pixels already land near 38 dB at 160 px. This is
    the floor that any other pipeline's PSNR against naive is to be read by.
    """
    floor: dict[str, float] = {}
    rnd = random.Random(0)
    for path in files:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
        for spec in SPEC_SETS[specs]:
            thumb = image.copy()
            thumb.thumbnail((spec.size, spec.size))
            noise = _noise(rnd, "L", thumb.size).point(lambda v: v & 1)
            bands = [ImageChops.add(b, noise) for b in thumb.split()[:3]]
            noisy = Image.merge(thumb.mode, bands + list(thumb.split()[3:]))
            a, b = (_naive_encode(im, spec) for im in (thumb, noisy))
            key = f"{spec.size} {spec.format}"
            floor[key] = min(floor.get(key, math.inf), psnr(a, b))
    return floor


def _naive_encode(image: Image.Image, spec: pipeline.Spec) -> Image.Image:
    out = io.BytesIO()
    if spec.format == "JPEG":
        _on_white(image).save(out, "JPEG", quality=spec.quality)
    else:
        image.save(out, spec.format, quality=spec.quality)
    return Image.open(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_kind(
    kind: str,
    results: dict[str, dict],
    quality: dict[str, dict],
    floor: dict[str, float],
) -> None:
    naive_cpu = results.get("naive", {}).get("cpu_ms")
    print(f"\n{kind}: per image, CPU and wall time, peak RSS of a fresh process")
    header = (
        f"{'variant':8} {'cpu ms':>8} {'wall ms':>8} {'img/s':>6} {'speedup':>8} "
        f"{'peak MiB':>9} {'min PSNR':>9} {'max bytes':>10}"
    )
    print(header)
    print("-" * len(header))
    for variant in VARIANTS:
        row = results.get(variant)
        if not row:
            print(f"{variant:8} (not run)")
            continue
        speedup = naive_cpu / row["cpu_ms"] if naive_cpu else math.nan
        pairs = [
            pair for values in quality.get(variant, {}).values() for pair in values
        ]
        min_psnr = min((p for p, _ in pairs), default=math.nan)
        max_ratio = max((r for _, r in pairs), default=math.nan)
        print(
            f"{variant:8} {row['cpu_ms']:8.1f} {row['wall_ms']:8.1f} "
            f"{1000 / row['cpu_ms']:6.2f} {speedup:7.2f}x {row['peak_mib']:9.1f} "
            f"{min_psnr:9.1f} {max_ratio:10.3f}"
        )
    print("\n  per output vs naive: min PSNR dB / max bytes ratio; floor: naive vs")
    print("  naive with 1-LSB input noise, the PSNR that chance alone reaches")
    for key in sorted(quality.get("ours", {}), key=lambda k: (-int(k.split()[0]), k)):
        cells = []
        for variant in ("ours", "pyvips"):
            values = quality.get(variant, {}).get(key, [])
            if values:
                cells.append(
                    f"{variant} {min(p for p, _ in values):5.1f} / "
                    f"{max(r for _, r in values):.3f}"
                )
        cells.append(f"floor {floor.get(key, math.nan):5.1f}")
        print(f"  {key:10} " + "   ".join(cells))
    report_targets(results, quality, floor)


def report_targets(
    results: dict[str, dict], quality: dict[str, dict], floor: dict[str, float]
) -> None:
    naive, ours, vips = (results.get(v) for v in VARIANTS)
    if not ours:
        return
    pairs = [pair for values in quality.get("ours", {}).values() for pair in values]
    print("\n  targets (ours)")
    if naive:
        speedup = naive["cpu_ms"] / ours["cpu_ms"]
        ok = speedup >= TARGET_SPEEDUP
        target = f"CPU >= {TARGET_SPEEDUP}x faster than naive"
        print(f"  {verdict(ok)}  {target}: {speedup:.2f}x")
    if vips:
        ratio = ours["cpu_ms"] / vips["cpu_ms"]
        ok = ratio <= 1.0
        print(f"  {verdict(ok)}  CPU no slower than pyvips: {ratio:.2f}x pyvips time")
    ok = ours["peak_mib"] < TARGET_PEAK_MIB
    peak = ours["peak_mib"]
    print(f"  {verdict(ok)}  peak RSS < {TARGET_PEAK_MIB} MiB: {peak:.1f} MiB")
    if pairs:
        low = min(p for p, _ in pairs)
        high = max(r for _, r in pairs)
        lowest_floor = min(floor.values(), default=math.nan)
        print(
            f"  {verdict(low >= TARGET_PSNR_DB)}  PSNR >= {TARGET_PSNR_DB} dB: "
            f"{low:.2f} (floor {lowest_floor:.2f})"
        )
        ok = high <= TARGET_BYTES_RATIO
        print(f"  {verdict(ok)}  bytes <= {TARGET_BYTES_RATIO:.2f}x naive: {high:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller images")
    parser.add_argument("--repeat", type=int, default=None, help="passes per variant")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--specs", choices=SPEC_SETS, default="default", help=argparse.SUPPRESS
    )
    parser.add_argument("files", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.files, args.out, args.repeat or 1, args.specs)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    repeat = args.repeat or (1 if args.quick else 2)
    folder = Path(tempfile.mkdtemp(prefix="bench-thumbnails-"))
    try:
        logger.info("generating inputs in %s", folder)
        inputs = generate(folder, args.quick)
        runs = [(kind, files, "default") for kind, files in inputs.items()]
        runs.append(("jpeg to avif", inputs["jpeg"], "avif"))
        for kind, files, specs in runs:
            results, quality = {}, {}
            out = folder / kind.replace(" ", "-")
            for variant in VARIANTS:
                if (kind, variant) in NOT_RUN:
                    logger.info(
                        "%s: %s not run: %s", kind, variant, NOT_RUN[kind, variant]
                    )
                    continue
                logger.info(
                    "%s: %s on %d files x %d", kind, variant, len(files), repeat
                )
                results[variant] = measure(variant, files, out / variant, repeat, specs)
            for variant in ("ours", "pyvips"):
                quality[variant] = compare(files, out, variant, specs)
            floor = noise_floor(files, specs)
            title = f"{len(files)} {kind.upper()} {_describe(files[0])}"
            report_kind(title, results, quality, floor)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _describe(path: Path) -> str:
    with Image.open(path) as image:
        return f"{image.width}x{image.height} {image.mode}"


if __name__ == "__main__":
    main()
