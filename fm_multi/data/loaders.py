"""Validating readers for every built part, usable on user data in the same formats.

Each reader checks its whole index when it is created and raises ValueError naming the file and
line (or annotation) of the first malformed entry: "chat_train.jsonl line 17: missing key
'messages'". Nothing is skipped silently. The datasets are plain, picklable torch Datasets (a list
of records plus paths), so DataLoader workers and DistributedSampler work with them. A `root` may
be the build folder (DIR) or the part's own folder (DIR/classify, DIR/text, ...).
"""

import json
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fm_multi.data.transcript import normalize_transcript

SAMPLE_RATE = 16000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ROLES = ("system", "user", "assistant")


def _part_dir(root, part: str) -> Path:
    root = Path(root)
    return root / part if (root / part).is_dir() else root


def load_labels(root) -> dict[str, list[str]]:
    """labels.json of a build folder (or of the folder above a part folder)."""
    root = Path(root)
    path = next((p for p in (root / "labels.json", root.parent / "labels.json") if p.exists()), None)
    if path is None:
        raise FileNotFoundError(f"no labels.json in {root} or {root.parent}")
    labels = json.loads(path.read_text(encoding="utf-8"))
    for task in ("classify", "detect"):
        names = labels.get(task)
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{path}: '{task}' must be a list of class names")
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: '{task}' has duplicate names")
    return labels


def _check_types(row: dict, required, where: str) -> None:
    items = required.items() if isinstance(required, dict) else ((k, None) for k in required)
    for key, kind in items:
        if key not in row:
            raise ValueError(f"{where}: missing key '{key}'")
        if kind is not None and not isinstance(row[key], kind):
            raise ValueError(f"{where}: key '{key}' should be {getattr(kind, '__name__', kind)}, "
                             f"got {type(row[key]).__name__}")


def read_jsonl_validated(path, required_keys: dict | Iterable[str], check: Callable | None = None) -> list[dict]:
    """All rows of a JSONL file; each must be an object with `required_keys` (names, or name -> type).

    `check(row, where)` may add per-row checks; it raises ValueError with `where` in the message.
    """
    path, rows = Path(path), []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            where = f"{path} line {n}"
            if not line.strip():
                raise ValueError(f"{where}: empty line")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            _check_types(row, required_keys, where)
            if check:
                check(row, where)
            rows.append(row)
    return rows


# ---- images -------------------------------------------------------------------------------------

class ClassifyDataset(Dataset):
    """An ImageFolder tree `<root>/<split>/<class>/<file>` -> (PIL RGB image, class index).

    Class indices follow labels.json "classify" when there is one, else the sorted folder names
    (as torchvision's ImageFolder). `.styles[i]` is the art style of item i, from
    meta_<split>.jsonl when present, else from a file name of the form `<style>_<number>.jpg`.
    """

    def __init__(self, root, split: str, transform: Callable | None = None):
        self.root = _part_dir(root, "classify")
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"no {split} folder in {self.root}")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        try:
            self.classes = load_labels(self.root)["classify"]
        except FileNotFoundError:
            self.classes = found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(f"{folder}: class folders not in labels.json: {unknown[:5]}")
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(str(p), index[c]) for c in found for p in sorted((folder / c).iterdir())
                        if p.suffix.lower() in IMAGE_EXTENSIONS]
        self.targets = [t for _, t in self.samples]
        self.styles = self._styles(split)
        self.transform = transform

    def _styles(self, split: str) -> list[str]:
        meta = self.root / f"meta_{split}.jsonl"
        if not meta.exists():
            matches = (re.fullmatch(r"(.+)_\d+", Path(p).stem) for p, _ in self.samples)
            return [m.group(1) if m else "unknown" for m in matches]
        rows = read_jsonl_validated(meta, {"file": str, "label": str, "style": str})
        by_file = {str(self.root / r["file"]): r for r in rows}
        for path, target in self.samples:
            if path not in by_file:
                raise ValueError(f"{meta}: no entry for image {path}")
            if by_file[path]["label"] != self.classes[target]:
                raise ValueError(f"{meta}: {path} is labelled {by_file[path]['label']!r} but lies in "
                                 f"folder {self.classes[target]!r}")
        if len(by_file) != len(self.samples):
            missing = sorted(set(by_file) - {p for p, _ in self.samples})
            raise ValueError(f"{meta}: lists images that do not exist, e.g. {missing[0]}")
        return [by_file[p]["style"] for p, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        with Image.open(path) as im:
            image = im.convert("RGB")
        return (self.transform(image) if self.transform else image), target


class DetectDataset(Dataset):
    """COCO `<root>/<split>/annotations.json` -> (PIL RGB image, {"boxes", "labels", "image_id"}).

    boxes: float32 (N, 4) xyxy in pixels; labels: int64 (N,) 0-based indices into labels.json
    "detect" (matched by category name), or into the categories sorted by id without labels.json.
    """

    def __init__(self, root, split: str, transforms: Callable | None = None):
        self.root = _part_dir(root, "detect")
        path = self.root / split / "annotations.json"
        coco = json.loads(path.read_text(encoding="utf-8"))
        for key in ("images", "annotations", "categories"):
            if not isinstance(coco.get(key), list):
                raise ValueError(f"{path}: missing list '{key}'")
        label_of = self._category_labels(coco["categories"], path)
        self.images, by_id = [], {}
        for n, img in enumerate(coco["images"]):
            _check_types(img, {"id": int, "file_name": str, "width": int, "height": int}, f"{path}: image #{n}")
            file = self.root / split / "images" / img["file_name"]
            if not file.exists():
                raise ValueError(f"{path}: image #{n}: file {file} does not exist")
            by_id[img["id"]] = {"file": str(file), "id": img["id"], "size": (img["width"], img["height"]),
                                "boxes": [], "labels": []}
            self.images.append(by_id[img["id"]])
        for n, ann in enumerate(coco["annotations"]):
            where = f"{path}: annotation #{n}"
            _check_types(ann, {"image_id": int, "category_id": int, "bbox": list}, where)
            if ann["image_id"] not in by_id or ann["category_id"] not in label_of:
                raise ValueError(f"{where}: unknown image_id or category_id")
            rec = by_id[ann["image_id"]]
            rec["boxes"].append(_xyxy(ann["bbox"], rec["size"], where))
            rec["labels"].append(label_of[ann["category_id"]])
        self.transforms = transforms

    def _category_labels(self, categories: list, path: Path) -> dict[int, int]:
        try:
            names = load_labels(self.root)["detect"]
        except FileNotFoundError:
            names = [c.get("name") for c in sorted(categories, key=lambda c: c.get("id", 0))]
        index = {name: i for i, name in enumerate(names)}
        out = {}
        for n, cat in enumerate(categories):
            _check_types(cat, {"id": int, "name": str}, f"{path}: category #{n}")
            if cat["name"] not in index:
                raise ValueError(f"{path}: category #{n}: {cat['name']!r} is not in labels.json")
            out[cat["id"]] = index[cat["name"]]
        return out

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        rec = self.images[i]
        with Image.open(rec["file"]) as im:
            image = im.convert("RGB")
        target = {"boxes": torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor(rec["labels"], dtype=torch.int64), "image_id": rec["id"]}
        return self.transforms(image, target) if self.transforms else (image, target)


def _xyxy(bbox: list, size: tuple[int, int], where: str) -> list[float]:
    """COCO [x, y, w, h] -> [x0, y0, x1, y1], checked to be non-empty and inside the image."""
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        raise ValueError(f"{where}: bbox must be 4 numbers")
    x, y, w, h = map(float, bbox)
    W, H = size
    if w <= 0 or h <= 0 or x < -0.5 or y < -0.5 or x + w > W + 0.5 or y + h > H + 0.5:
        raise ValueError(f"{where}: bbox {bbox} is empty or outside the {W}x{H} image")
    return [max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)]


# ---- audio --------------------------------------------------------------------------------------

def load_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A sound file as float32 mono at `sample_rate` (channels averaged, resampled if needed)."""
    import soundfile as sf
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        import torchaudio.functional as AF
        audio = AF.resample(torch.from_numpy(audio), sr, sample_rate).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


class SpeechDataset(Dataset):
    """`<root>/<split>.jsonl` rows {"audio": path relative to root, "text", ...} -> dict items.

    Items: {"audio": float32 mono 16 kHz array, "text", "speaker", plus the row's other keys}.
    Transcripts must already be normalised (see fm_multi.data.speech.normalize_transcript);
    pass normalize=True to normalise user transcripts instead of rejecting them.
    """

    def __init__(self, root, split: str, normalize: bool = False):
        self.root = _part_dir(root, "speech")
        manifest = self.root / f"{split}.jsonl"

        def check(row: dict, where: str) -> None:
            if not (self.root / row["audio"]).is_file():
                raise ValueError(f"{where}: audio file {self.root / row['audio']} does not exist")
            clean = normalize_transcript(row["text"])
            if normalize:
                row["text"] = clean
            elif clean != row["text"]:
                raise ValueError(f"{where}: text is not normalised (expected {clean!r}); use normalize=True")
            if not row["text"]:
                raise ValueError(f"{where}: empty transcript")

        self.rows = read_jsonl_validated(manifest, {"audio": str, "text": str}, check)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        return {**row, "audio": load_audio(self.root / row["audio"]), "path": str(self.root / row["audio"]),
                "speaker": row.get("speaker", "unknown")}


# ---- text ---------------------------------------------------------------------------------------

def _text_file(root, stem: str, split: str) -> Path:
    root = Path(root)
    return root if root.is_file() else _part_dir(root, "text") / f"{stem}_{split}.jsonl"


def _non_empty(*keys: str) -> Callable:
    def check(row: dict, where: str) -> None:
        for key in keys:
            if not row[key].strip():
                raise ValueError(f"{where}: '{key}' is empty")
    return check


class SummarizeDataset(Dataset):
    """`summarize_<split>.jsonl` (or any JSONL file given as root): {"document", "summary", ...}."""

    def __init__(self, root, split: str = "train"):
        self.path = _text_file(root, "summarize", split)
        self.rows = read_jsonl_validated(self.path, {"document": str, "summary": str},
                                         _non_empty("document", "summary"))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def _check_messages(row: dict, where: str) -> None:
    messages = row["messages"]
    if not messages:
        raise ValueError(f"{where}: 'messages' is empty")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: message {k} needs a role in {ROLES} and a string content")
        if m["role"] == "system" and k != 0:
            raise ValueError(f"{where}: message {k}: a system message may only come first")
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: the last message must be from the assistant")
    if not any(m["role"] == "user" for m in messages):
        raise ValueError(f"{where}: no user message")


class ChatDataset(Dataset):
    """`chat_<split>.jsonl` (or any JSONL file given as root): {"messages": [{"role", "content"}], ...}."""

    def __init__(self, root, split: str = "train"):
        self.path = _text_file(root, "chat", split)
        self.rows = read_jsonl_validated(self.path, {"messages": list}, _check_messages)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]
