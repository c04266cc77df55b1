"""Build the gate's negative set: non-dermoscopy images and degraded dermoscopy, offline.

Everything comes from what is on this machine; nothing is downloaded:

* ``clinical``: the DermNet clinical photos of ``../shared/data/clinical_photos_dev``
  (copyrighted: listed by path in the manifest, never committed);
* ``clinical_no_watermark``: the same photos with the corner that holds the DermNet watermark
  cut off (the left quarter and the bottom quarter), written under ``OUT``: a gate must refuse
  these as well, or it has learnt the watermark;
* ``everyday``: photos that ship inside installed packages (scikit-image's ``skimage.data``,
  scikit-learn's sample images, matplotlib's sample data), each whole and as 4 random crops;
* ``documents``: text pages, code and spreadsheet screenshots, application windows and charts
  rendered here with matplotlib, and scikit-image's ``page`` and ``text``;
* ``medical``: other medical images shipped in packages: CT, MR, ultrasound and nuclear
  medicine DICOM test files of pydicom, a brain MRI slice of matplotlib, scikit-image's retinal
  fundus photos, histology (IHC), microscopy and the Shepp-Logan CT phantom; whole and as crops;
* ``synthetic``: flat colours, gradients, noise and geometric patterns;
* ``degraded``: real dermoscopy from ``isic2018_task3_test`` blurred, over- and under-exposed,
  flattened towards one colour (``blank``) and shrunk (``tiny``), each at 5 graded severities.

Every image gets a ``split``: ``dev`` to fit and design the gate with, ``test`` for the figures
(by source: crops of one source share its split). About half of the clinical photos are
``dev``, a fifth of everything else: clinical photos are the kind closest to dermoscopy, and the
contrast score learns them better from more examples (docs/GATE.md).

    python benchmarks/negatives.py --out /tmp/melanoscan-negatives

writes ``OUT/manifest.csv`` (path, kind, group, split, degradation, severity, level), the
generated images under ``OUT/<kind>/``, and ``OUT/fit.csv``: the ``dev`` non-dermoscopy images
the gate's contrast score may learn from (``melanoscan calibrate --gate-only --negatives``),
the clinical photos only without their watermark. ``--degraded-count`` picks how many
dermoscopy images are degraded (default 100).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLINICAL = DATA / "clinical_photos_dev"
DERMOSCOPY = DATA / "isic2018_task3_test"
DEV_FRACTION = 0.2
CLINICAL_DEV_FRACTION = 0.5
CROPS = 4

# (name, function of the severity level 1..5 -> PIL image from a dermoscopy image); the values
# at each level are in DEGRADATIONS so the benchmark can say where flagging starts.
DEGRADATIONS: dict[str, tuple[str, tuple[float, ...]]] = {
    "blur": ("Gaussian blur sigma, % of the shorter side", (0.5, 1.0, 2.0, 3.0, 5.0)),
    "overexposed": ("pixel gain (clipped at 255)", (1.6, 2.0, 2.5, 3.5, 5.0)),
    "underexposed": ("pixel gain", (0.5, 0.35, 0.25, 0.15, 0.08)),
    "blank": ("contrast kept around the mean colour", (0.3, 0.15, 0.08, 0.04, 0.0)),
    "tiny": ("shorter side, pixels", (128, 96, 64, 48, 32)),
}
LOREM_TEXT = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation "
    "ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in "
    "reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur "
    "sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est "
    "laborum. Patient presented with a pigmented lesion on the left shoulder; dermoscopy "
    "showed an atypical network. Follow-up in three months was advised."
)
LOREM = LOREM_TEXT.split()


@dataclass(frozen=True)
class Entry:
    """One image of the set."""

    path: str
    kind: str
    group: str
    degradation: str = ""
    severity: float | None = None
    level: int | None = None


def split_of(group: str) -> str:
    """``dev`` or ``test``, fixed by the group's name (stable across runs and machines)."""
    digest = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)
    fraction = CLINICAL_DEV_FRACTION if group.startswith("clinical/") else DEV_FRACTION
    return "dev" if digest % 1000 < fraction * 1000 else "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (not the repo)")
    parser.add_argument("--degraded-count", type=int, default=100,
                        help="dermoscopy images to degrade")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.resolve().is_relative_to(ROOT) and not args.out.resolve().is_relative_to(
            ROOT / "runs"):
        parser.error("--out must be outside the repository (or under runs/): the clinical photos "
                     "and package images must never be committed")
    rng = np.random.default_rng(args.seed)
    entries = build(args.out, rng, args.degraded_count)
    table = pd.DataFrame([vars(e) for e in entries])
    table.insert(3, "split", table["group"].map(split_of))
    table.to_csv(args.out / "manifest.csv", index=False)
    fit = table[(table["split"] == "dev") & ~table["kind"].isin(["clinical", "degraded"])]
    fit[["path", "kind"]].to_csv(args.out / "fit.csv", index=False)
    counts = table.groupby(["kind", "split"]).size().unstack(fill_value=0)
    print(counts.to_string())
    print(f"wrote {len(table)} entries to {args.out / 'manifest.csv'}, {len(fit)} to "
          f"{args.out / 'fit.csv'}")


def build(out: Path, rng: np.random.Generator, degraded_count: int) -> list[Entry]:
    entries: list[Entry] = []
    if CLINICAL.is_dir():
        photos = [p for p in sorted(CLINICAL.rglob("*"))
                  if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
        entries += [Entry(str(p), "clinical", f"clinical/{p.stem}") for p in photos]
        for photo in photos:
            image = Image.open(photo).convert("RGB")
            width, height = image.size
            cut = image.crop((width // 4, 0, width, height - height // 4))
            entries.append(_save(cut, out / "clinical_no_watermark" / f"{photo.stem}.png",
                                 "clinical_no_watermark", f"clinical/{photo.stem}"))
    for kind, sources in (("everyday", everyday_sources()), ("medical", medical_sources())):
        for name, image in sources:
            for i, view in enumerate(with_crops(image, rng)):
                entries.append(_save(view, out / kind / f"{name}_{i}.png", kind, f"{kind}/{name}"))
    for name, image in documents(rng):
        entries.append(_save(image, out / "documents" / f"{name}.png", "documents",
                             f"documents/{name.rsplit('_', 1)[0]}_{hash_bucket(name)}"))
    for name, image in synthetic(rng):
        entries.append(_save(image, out / "synthetic" / f"{name}.png", "synthetic",
                             f"synthetic/{name}"))
    entries += degraded(out / "degraded", rng, degraded_count)
    return entries


def hash_bucket(name: str, buckets: int = 5) -> int:
    """Generated images of one type fall into a few groups, so both splits get some."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % buckets


def _save(image: Image.Image, path: Path, kind: str, group: str, **extra: object) -> Entry:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        image.convert("RGB").save(path, quality=95)
    else:
        image.save(path)
    return Entry(str(path), kind, group, **extra)  # type: ignore[arg-type]


def with_crops(image: Image.Image, rng: np.random.Generator) -> Iterator[Image.Image]:
    """The image, then ``CROPS`` random crops of 40-70% of its shorter side."""
    yield image
    width, height = image.size
    for _ in range(CROPS):
        side = int(min(width, height) * rng.uniform(0.4, 0.7))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        yield image.crop((left, top, left + side, top + side))


def _to_image(array: np.ndarray) -> Image.Image:
    """Any 2-D or RGB array, scaled to 8 bits by its own range when it is not ``uint8``."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        low, high = np.percentile(array, [0.5, 99.5])
        array = np.clip((array - low) / max(high - low, 1e-9) * 255, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    return Image.fromarray(array).convert("RGB")


def everyday_sources() -> list[tuple[str, Image.Image]]:
    import matplotlib
    import skimage.data
    from sklearn.datasets import load_sample_images

    sources = []
    for name in ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "moon",
                 "hubble_deep_field", "brick", "grass", "gravel", "clock", "motorcycle_left"):
        loader = getattr(skimage.data, "stereo_motorcycle" if name == "motorcycle_left" else name)
        array = loader()[0] if name == "motorcycle_left" else loader()
        sources.append((f"skimage_{name}", _to_image(array)))
    samples = load_sample_images()
    for filename, array in zip(samples.filenames, samples.images, strict=True):
        sources.append((f"sklearn_{Path(filename).stem}", _to_image(array)))
    sample_data = Path(matplotlib.get_data_path()) / "sample_data"
    for filename in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        with Image.open(sample_data / filename) as image:
            sources.append((f"matplotlib_{Path(filename).stem}", image.convert("RGB")))
    return sources


def medical_sources() -> list[tuple[str, Image.Image]]:
    import matplotlib
    import pydicom
    import skimage.data

    sources = []
    for name in ("retina", "microaneurysms", "immunohistochemistry", "cell", "shepp_logan_phantom"):
        sources.append((f"skimage_{name}", _to_image(getattr(skimage.data, name)())))
    mri = Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz"
    with gzip.open(mri) as stream:
        sources.append(("matplotlib_mri_s1045",
                        _to_image(np.frombuffer(stream.read(), ">u2").reshape(256, 256))))
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    for filename in ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm",
                     "examples_ybr_color.dcm", "examples_palette.dcm", "examples_overlay.dcm",
                     "examples_jpeg2k.dcm", "JPEG2000.dcm", "693_J2KI.dcm"):
        dataset = pydicom.dcmread(folder / filename)
        array = dataset.pixel_array
        interpretation = str(dataset.get("PhotometricInterpretation", ""))
        if array.ndim == 4 or (array.ndim == 3 and interpretation.startswith("MONO")):
            array = array[len(array) // 2]  # the middle frame of a multi-frame file
        if interpretation.startswith("PALETTE"):
            array = pydicom.pixels.apply_color_lut(array, dataset)
        sources.append((f"pydicom_{Path(filename).stem}", _to_image(array)))
    return sources


def _figure_image(draw: Callable[[object], None], size: tuple[float, float], dpi: int = 100,
                  facecolor: str = "white") -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=dpi, facecolor=facecolor)
    canvas = FigureCanvasAgg(figure)
    draw(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def _words(rng: np.random.Generator, count: int) -> str:
    return " ".join(rng.choice(LOREM, size=count))


def documents(rng: np.random.Generator, per_type: int = 16) -> Iterator[tuple[str, Image.Image]]:
    """Rendered text pages, code, spreadsheets, application windows and charts."""
    import skimage.data

    yield "skimage_page_0", _to_image(skimage.data.page())
    yield "skimage_text_0", _to_image(skimage.data.text())
    makers = {"page": _text_page, "code": _code_screen, "sheet": _spreadsheet,
              "window": _app_window, "chart": _chart}
    for kind, make in makers.items():
        for i in range(per_type):
            yield f"{kind}_{i}", make(np.random.default_rng(rng.integers(1 << 31)))


def _text_page(rng: np.random.Generator) -> Image.Image:
    paper = ["white", "#fdf8ec", "#f4f4f4"][int(rng.integers(3))]

    def draw(figure: object) -> None:
        y = 0.95
        figure.text(0.08, y, _words(rng, 5).title(), fontsize=int(rng.integers(14, 22)),  # type: ignore[attr-defined]
                    weight="bold", va="top")
        y -= 0.08
        size = int(rng.integers(8, 12))
        while y > 0.05:
            for line in textwrap.wrap(_words(rng, int(rng.integers(30, 70))), 80):
                figure.text(0.08, y, line, fontsize=size, va="top",  # type: ignore[attr-defined]
                            family=["serif", "sans-serif"][int(rng.integers(2))])
                y -= size / 330
                if y < 0.05:
                    break
            y -= 0.03

    return _figure_image(draw, (6.0, 8.0), dpi=int(rng.integers(70, 110)), facecolor=paper)


def _code_screen(rng: np.random.Generator) -> Image.Image:
    colours = ["#d4d4d4", "#569cd6", "#ce9178", "#6a9955", "#dcdcaa", "#c586c0"]

    def draw(figure: object) -> None:
        y, indent = 0.96, 0
        while y > 0.03:
            indent = max(0, min(4, indent + int(rng.integers(-1, 2))))
            text = "    " * indent + "_".join(rng.choice(LOREM, size=int(rng.integers(1, 4))))
            text += ["(self, x):", " = None", ".append(item)", "  # TODO", ":"][
                int(rng.integers(5))]
            figure.text(0.02, y, text, fontsize=10, family="monospace", va="top",  # type: ignore[attr-defined]
                        color=colours[int(rng.integers(len(colours)))])
            y -= 0.035

    return _figure_image(draw, (8.0, 5.0), facecolor=["#1e1e1e", "#ffffff", "#282c34"][
        int(rng.integers(3))])


def _spreadsheet(rng: np.random.Generator) -> Image.Image:
    def draw(figure: object) -> None:
        axes = figure.add_axes((0.02, 0.02, 0.96, 0.96))  # type: ignore[attr-defined]
        axes.axis("off")
        rows, cols = int(rng.integers(12, 25)), int(rng.integers(4, 8))
        cells = [[f"{rng.normal(100, 50):.2f}" if c else str(rng.choice(LOREM))
                  for c in range(cols)] for _ in range(rows)]
        table = axes.table(cellText=cells, colLabels=[f"col {c}" for c in range(cols)],
                           loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)

    return _figure_image(draw, (8.0, 6.0))


def _app_window(rng: np.random.Generator) -> Image.Image:
    from matplotlib.patches import FancyBboxPatch, Rectangle

    accent = rng.uniform(0.1, 0.9, size=3)

    def draw(figure: object) -> None:
        axes = figure.add_axes((0, 0, 1, 1))  # type: ignore[attr-defined]
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.axis("off")
        axes.add_patch(Rectangle((0, 0.93), 1, 0.07, color=accent))
        axes.text(0.02, 0.965, _words(rng, 3).title(), color="white", va="center", fontsize=12)
        axes.add_patch(Rectangle((0, 0), 0.22, 0.93, color="#eef0f3"))
        for i in range(8):
            axes.text(0.02, 0.88 - i * 0.06, _words(rng, 2), fontsize=9, va="center")
        for i in range(int(rng.integers(2, 5))):
            x, y = 0.26 + 0.18 * i, 0.08
            axes.add_patch(FancyBboxPatch((x, y), 0.15, 0.06, boxstyle="round,pad=0.01",
                                          color=accent))
            axes.text(x + 0.075, y + 0.03, str(rng.choice(LOREM)), ha="center", va="center",
                      color="white", fontsize=9)
        y = 0.85
        for line in textwrap.wrap(_words(rng, 90), 64):
            axes.text(0.26, y, line, fontsize=9, va="top")
            y -= 0.05
            if y < 0.2:
                break

    return _figure_image(draw, (8.0, 5.5))


def _chart(rng: np.random.Generator) -> Image.Image:
    kind = ["line", "bar", "scatter", "pie", "hist", "heatmap"][int(rng.integers(6))]

    def draw(figure: object) -> None:
        axes = figure.add_subplot()  # type: ignore[attr-defined]
        x = np.arange(20)
        if kind == "line":
            for _ in range(int(rng.integers(1, 4))):
                axes.plot(x, np.cumsum(rng.normal(size=20)))
        elif kind == "bar":
            axes.bar(rng.choice(LOREM, size=6, replace=False), rng.uniform(1, 10, size=6))
        elif kind == "scatter":
            axes.scatter(rng.normal(size=200), rng.normal(size=200), s=8,
                         c=rng.uniform(size=200))
        elif kind == "pie":
            axes.pie(rng.uniform(1, 5, size=5), labels=rng.choice(LOREM, size=5))
        elif kind == "hist":
            axes.hist(rng.normal(size=500), bins=30)
        else:
            axes.imshow(rng.normal(size=(12, 12)).cumsum(axis=0), cmap=["viridis", "magma",
                                                                         "coolwarm"][
                int(rng.integers(3))])
        axes.set_title(_words(rng, 4))

    return _figure_image(draw, (6.4, 4.8))


def synthetic(rng: np.random.Generator, size: int = 256) -> Iterator[tuple[str, Image.Image]]:
    """Flat colours (skin tones among them), gradients, noise and patterns."""
    skin = [(224, 172, 145), (198, 134, 104), (141, 85, 58), (241, 194, 166), (90, 56, 37)]
    for i, colour in enumerate([*skin, *(tuple(rng.integers(0, 256, 3)) for _ in range(5))]):
        yield f"flat_{i}", Image.new("RGB", (size, size), tuple(int(c) for c in colour))
    ramp = np.linspace(0, 1, size)[None, :, None]
    for i in range(10):
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        pixels = start + (end - start) * (ramp if i % 2 else np.transpose(ramp, (1, 0, 2)))
        pixels = np.broadcast_to(pixels, (size, size, 3))
        yield f"gradient_{i}", Image.fromarray(pixels.astype(np.uint8))
    for i in range(10):
        noise = rng.integers(0, 256, (size, size, 3 if i % 2 else 1)).astype(np.uint8)
        image = Image.fromarray(noise.squeeze()).convert("RGB")
        if i >= 6:
            image = image.filter(ImageFilter.GaussianBlur(3))  # smoother "cloud" noise
        yield f"noise_{i}", image
    grid = np.indices((size, size)).sum(axis=0)
    for i in range(5):
        period = int(rng.integers(8, 48))
        checks = ((grid // period) % 2 * 255).astype(np.uint8)
        yield f"pattern_{i}", Image.fromarray(checks if i % 2 else
                                              ((np.indices((size, size))[1] // period) % 2
                                               * 255).astype(np.uint8)).convert("RGB")


def degraded(out: Path, rng: np.random.Generator, count: int) -> list[Entry]:
    files = sorted(DERMOSCOPY.rglob("*.jpg"))
    if not files:
        return []
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=min(count, len(files)),
                                                  replace=False))]
    entries = []
    for path in chosen:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        for name, (_, levels) in DEGRADATIONS.items():
            for level, severity in enumerate(levels, start=1):
                target = out / name / str(level) / f"{path.stem}.jpg"
                entries.append(_save(degrade(image, name, severity), target, "degraded",
                                     f"degraded/{path.stem}", degradation=name,
                                     severity=severity, level=level))
    return entries


def degrade(image: Image.Image, name: str, severity: float) -> Image.Image:
    """``image`` with one degradation at ``severity`` (see :data:`DEGRADATIONS`)."""
    pixels = np.asarray(image, dtype=np.float32)
    if name == "blur":
        return image.filter(ImageFilter.GaussianBlur(min(image.size) * severity / 100))
    if name in ("overexposed", "underexposed"):
        return Image.fromarray(np.clip(pixels * severity, 0, 255).astype(np.uint8))
    if name == "blank":
        mean = pixels.reshape(-1, 3).mean(axis=0)
        return Image.fromarray(np.clip(mean + (pixels - mean) * severity, 0, 255).astype(
            np.uint8))
    if name == "tiny":
        scale = severity / min(image.size)
        return image.resize((max(1, round(image.width * scale)),
                             max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    raise ValueError(f"unknown degradation {name!r}")


if __name__ == "__main__":
    main()
