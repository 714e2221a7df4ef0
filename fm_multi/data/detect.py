"""Object detection set: 256x256 scenes of 1-8 objects with exact boxes, in COCO format.

Objects are the classification classes (labels.json "detect"), 24-128 px on their longest side,
pasted onto photo or texture backgrounds (sometimes gradients or noise). Boxes come from the
alpha masks, not from the pasted rectangles: the box of an object is the tight box of the pixels
where it is on top after all pasting, clipped to the image. A placement that would leave any object
more than half hidden is redrawn (and the object dropped after a few tries), so no picture
contains a mostly covered, and so ambiguous, object. Val scenes also use the held-out OpenMoji style
for half of their objects; each annotation records its `style`.
"""

from functools import partial
from pathlib import Path

import numpy as np

from fm_multi.data import images
from fm_multi.data.common import item_rng, parallel_map, write_card, write_json

PART = 2
SCENE = 256
MIN_SIDE, MAX_SIDE = 24, 128
MAX_OBJECTS = 8
MIN_VISIBLE = 0.5      # share of its own in-frame pixels every object keeps after occlusion
TRIES = 6
SCENES = {"full": {"train": 24000, "val": 500}, "small": {"train": 64, "val": 16}}
BACKGROUND_ODDS = {"photo": 0.45, "texture": 0.35, "gradient": 0.1, "noise": 0.1}


def _pick_style(rng, name: str, stamps: dict, val: bool) -> str:
    if val and rng.random() < 0.5:
        return images.HELDOUT_STYLE
    seen = images.train_styles(name, stamps)
    return seen[rng.integers(len(seen))]


def _propose(rng, classes, stamps, val):
    """A random object: (class index, style, augmented cut-out, x, y)."""
    k = int(rng.integers(len(classes)))
    style = _pick_style(rng, classes[k], stamps, val)
    cut = images.cutout(style, classes[k], stamps, int(rng.integers(8)))
    side = np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE)))    # log-uniform scale
    obj = images.augment_cutout(cut, rng, side, style)
    x = int(rng.integers(-obj.width // 4, SCENE - obj.width * 3 // 4 + 1))
    y = int(rng.integers(-obj.height // 4, SCENE - obj.height * 3 // 4 + 1))
    return k, style, obj, x, y


def _layout(rng, classes, stamps, val, n):
    """Place up to n objects so that each stays at least MIN_VISIBLE visible.

    Returns the accepted objects in paint order and an (H, W) map of which object is on top
    of each pixel (-1 = background).
    """
    owner = np.full((SCENE, SCENE), -1, dtype=np.int16)
    placed, areas = [], []
    for _ in range(n):
        for _ in range(TRIES):
            k, style, obj, x, y = _propose(rng, classes, stamps, val)
            mask = images.footprint(obj, x, y, SCENE, SCENE)
            area = int(mask.sum())
            if area < 0.6 * np.count_nonzero(np.asarray(obj.getchannel("A"))):
                continue                                   # too much of it off the frame
            trial = np.where(mask, len(placed), owner)
            seen = np.bincount(trial[trial >= 0].ravel(), minlength=len(placed) + 1)
            if all(seen[i] >= MIN_VISIBLE * a for i, a in enumerate(areas)):
                owner = trial
                placed.append((k, style, obj, x, y))
                areas.append(area)
                break
    return placed, owner


def _box(visible: np.ndarray) -> list[float]:
    """COCO [x, y, w, h] of a bool mask; pixel (r, c) covers [c, c+1) x [r, r+1)."""
    rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def scene(index: int, seed: int, classes: list[str], stamps: dict, val: bool):
    """Draw scene `index`: returns (PIL image, background kind, [(class index, style, box)])."""
    rng = item_rng(seed, PART, val, index)
    kind = str(rng.choice(list(BACKGROUND_ODDS), p=list(BACKGROUND_ODDS.values())))
    canvas = images.background(kind, rng, SCENE)
    placed, owner = _layout(rng, classes, stamps, val, int(rng.integers(1, MAX_OBJECTS + 1)))
    objects = []
    for i, (k, style, obj, x, y) in enumerate(placed):
        images.paste(canvas, obj, x, y)
        objects.append((k, style, _box(owner == i)))
    return images.finish(canvas, rng), kind, objects


def _make(index: int, seed: int, classes: list, stamps: dict, val: bool, folder: Path):
    im, kind, objects = scene(index, seed, classes, stamps, val)
    name = f"{index:06d}.jpg"
    images.save_jpeg(im, folder / "images" / name)
    return name, kind, objects


def _coco(results: list, classes: list[str]) -> dict:
    imgs, anns = [], []
    for image_id, (name, kind, objects) in enumerate(results, start=1):
        imgs.append({"id": image_id, "file_name": name, "width": SCENE, "height": SCENE,
                     "background": kind, "styles": sorted({s for _, s, _ in objects})})
        for k, style, box in objects:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": k + 1, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0, "style": style})
    cats = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(classes)]
    return {"info": {"description": "fm_multi synthetic detection scenes"},
            "images": imgs, "annotations": anns, "categories": cats}


def build(out: Path, classes: list[str], stamps: dict, small: bool, seed: int, workers: int) -> dict:
    """Write DIR/detect; returns the counts for build.json."""
    counts, styles = {}, set()
    for split, n in SCENES["small" if small else "full"].items():
        folder = out / "detect" / split
        make = partial(_make, seed=seed, classes=classes, stamps=stamps, val=split == "val", folder=folder)
        coco = _coco(parallel_map(make, list(range(n)), workers, desc=f"detect {split}", chunksize=16), classes)
        write_json(folder / "annotations.json", coco)
        counts[split] = len(coco["images"])
        counts[f"{split}_objects"] = len(coco["annotations"])
        styles |= {a["style"] for a in coco["annotations"]}
    _card(out / "detect", counts, len(classes), sorted(styles))
    return {**counts, "styles": sorted(styles)}


def _card(root: Path, counts: dict, n_classes: int, styles: list[str]) -> None:
    trained = ", ".join(s for s in styles if s != images.HELDOUT_STYLE)
    write_card(root / "DATASET_CARD.md", "fm_multi detection set", {
        "Contents": f"""
{counts['train']} train scenes ({counts['train_objects']} objects) and {counts['val']} val scenes
({counts['val_objects']} objects), {SCENE}x{SCENE} RGB JPEG, {n_classes} categories (category id = index + 1
into labels.json "detect"). `<split>/annotations.json` is COCO (pycocotools and torchvision CocoDetection
read it); extra keys: image `background` and `styles`, annotation `style`. `area` is the box area.""",
        "How it was made": f"""
1-{MAX_OBJECTS} cut-outs per scene, {MIN_SIDE}-{MAX_SIDE} px (log-uniform), recoloured, flipped and rotated,
may run up to a quarter off the frame and overlap. Each box is the tight box of the object's pixels
that stay on top (alpha > 0), so boxes are exact after occlusion; placements that would hide more than
half of any object are redrawn. Train uses the styles {trained} (the vector styles where the build
found their packages); val gives half of its objects the held-out OpenMoji style.""",
        "Sources and licences": images.style_sources(styles) + """
- scikit-image sample pictures (mostly CC0 / public domain)""",
    })
