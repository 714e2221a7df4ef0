"""Image classification set: one object per 128x128 picture, in an ImageFolder tree.

Train pictures use every training style that draws the class (Noto, Symbola, Tux Paint stamps where a
class has one, and the vector styles images.VECTOR_STYLES where their npm packages are installed and have
the class); val adds OpenMoji, a style the model never sees in training, for half of its pictures, so the
val accuracy can be split into "seen style" and "unseen style" with the `style` key of meta_val.jsonl.
"""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fm_multi.data import images
from fm_multi.data.common import item_rng, parallel_map, write_card, write_jsonl

PART = 1                                   # seeds item_rng; each part has its own number
IMAGE_SIZE = 128
PER_CLASS = {"full": {"train": 210, "val": 20}, "small": {"train": 10, "val": 20}}
BACKGROUND_ODDS = {"photo": 0.4, "texture": 0.25, "gradient": 0.15, "noise": 0.2}


@dataclass(frozen=True)
class Example:
    split: str
    index: int
    name: str
    style: str
    variant: int

    @property
    def file(self) -> str:
        return f"{self.split}/{self.name}/{self.style}_{self.index:06d}.jpg"


def _quota(total: int, styles: list[str], first_extra: int = 0) -> dict[str, int]:
    """Share `total` pictures between styles as evenly as possible; the rest go one each to the styles
    from position `first_extra` on (wrapping around)."""
    base, extra = divmod(total, len(styles))
    return {s: base + ((i - first_extra) % len(styles) < extra) for i, s in enumerate(styles)}


def plan(classes: list[str], stamps: dict[str, list[str]], small: bool) -> list[Example]:
    """Every picture to draw, in a fixed order; the index makes file names unique per split."""
    counts, examples = PER_CLASS["small" if small else "full"], []
    for split in ("train", "val"):
        index = 0
        for c, name in enumerate(classes):
            seen = images.train_styles(name, stamps)
            if split == "train":
                quota = _quota(counts["train"], seen)
            else:  # fewer val pictures than styles: the extras rotate with the class, so every style gets some
                held = counts["val"] // 2
                quota = {images.HELDOUT_STYLE: held, **_quota(counts["val"] - held, seen, first_extra=c)}
            for style, n in quota.items():
                for k in range(n):
                    examples.append(Example(split, index, name, style, k))
                    index += 1
    return examples


def draw(ex: Example, seed: int, stamps: dict[str, list[str]]):
    """One picture of ex.name: a cut-out of 55-95% of the frame on a random background."""
    rng = item_rng(seed, PART, ex.split == "val", ex.index)
    kind = rng.choice(list(BACKGROUND_ODDS), p=list(BACKGROUND_ODDS.values()))
    canvas = images.background(kind, rng, IMAGE_SIZE)
    obj = images.cutout(ex.style, ex.name, stamps, ex.variant)
    obj = images.augment_cutout(obj, rng, rng.uniform(0.55, 0.95) * IMAGE_SIZE, ex.style)
    x, y = _position(rng, obj.width), _position(rng, obj.height)
    images.paste(canvas, obj, x, y)
    return images.finish(canvas, rng), str(kind)


def _position(rng, extent: int) -> int:
    """Top-left coordinate that keeps ~85% of the object in frame (centred if it is too big)."""
    lo, hi = -int(0.15 * extent), IMAGE_SIZE - int(0.85 * extent)
    return int(rng.integers(lo, hi + 1)) if hi >= lo else (IMAGE_SIZE - extent) // 2


def _make(ex: Example, seed: int, stamps: dict, root: Path) -> dict:
    im, kind = draw(ex, seed, stamps)
    images.save_jpeg(im, root / ex.file)
    return {"file": ex.file, "label": ex.name, "style": ex.style, "background": kind}


def build(out: Path, classes: list[str], stamps: dict[str, list[str]], small: bool,
          seed: int, workers: int) -> dict:
    """Write DIR/classify; returns the counts for build.json."""
    root = out / "classify"
    examples = plan(classes, stamps, small)
    rows = parallel_map(partial(_make, seed=seed, stamps=stamps, root=root), examples, workers,
                        desc="classify", chunksize=32)
    counts = {}
    for split in ("train", "val"):
        counts[split] = write_jsonl(root / f"meta_{split}.jsonl", [r for r in rows if r["file"].startswith(split)])
    styles = sorted({r["style"] for r in rows})
    _card(root, classes, stamps, counts, styles)
    return {**counts, "classes": len(classes), "styles": styles}


def _card(root: Path, classes: list, stamps: dict, counts: dict, styles: list) -> None:
    trained = ", ".join(s for s in styles if s != images.HELDOUT_STYLE)
    write_card(root / "DATASET_CARD.md", "fm_multi classification set", {
        "Contents": f"""
{counts['train']} train and {counts['val']} val pictures, {IMAGE_SIZE}x{IMAGE_SIZE} RGB JPEG (quality 90),
{len(classes)} classes named by their CLDR emoji short names (labels.json). Styles: {', '.join(styles)}.
Layout: `<split>/<class>/<style>_<index>.jpg`, readable by torchvision ImageFolder; `meta_<split>.jsonl`
gives file, label, style and background of each picture.""",
        "How it was made": f"""
Each picture pastes one cut-out (scaled to 55-95% of the frame, recoloured, flipped, rotated by up to
25 degrees) onto a crop of a scikit-image sample photo, a texture, a two-colour gradient or smooth
colour noise, and is sometimes blurred. Train uses the styles {trained} (Tux Paint only for the
{len(stamps)} classes whose stamp label names the class; the vector styles where the build found their
packages and the class); val gives half of each class to OpenMoji, which never appears in train.
Filter meta_val.jsonl by `style` to score seen and unseen styles apart. Everything is deterministic from
the build seed.""",
        "Sources and licences": images.style_sources(styles) + """
- scikit-image sample pictures (mostly CC0 / public domain)
- Unicode emoji names (Unicode licence)""",
    })
