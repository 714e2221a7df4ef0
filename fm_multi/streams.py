"""Training data as streams: each task's dataset, augmentation and collate function, and an endless
batch order.

The order is a pure function of (seed, batch number, rank, world size): batch k of a task comes from
epoch e = k // batches_per_epoch, whose permutation is DistributedSampler's for `set_epoch(e)`
(seeded by seed + e, sharded by rank). Every example of batch k also carries its own augmentation
seed, so a resumed run that asks for the stream from batch k onwards gets exactly the batches, crops
and flips the interrupted run would have read next, whatever the number of DataLoader workers.

Augmentation (train split only): classification pictures get a random crop of 70-100% of their
area, a horizontal flip, sometimes a line-art look (flat fills, dark ink lines along their edges), and
colour changes (brightness, contrast, saturation; sometimes flat posterised colours or grey); detection
scenes sometimes the same line-art look and a horizontal flip (boxes mirrored with them); speech clips
a speed change of 0.9-1.1x, up to two short silences (SpecAugment's time masks, on the waveform) and a
0.9-1.1x stretch of the log-mel's frequency axis (vocal tract length perturbation).
The classify set has about 210 pictures per class in seven drawing styles, which a ViT from scratch
memorises without augmentation; colour changes and line art push it towards shapes, which carry over
to a style it never saw.
The speech clips were augmented once when the data was built; a new change each epoch keeps the
CTC head from learning the 24,000 clips by heart.
"""
from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from fm_multi.config import ModelConfig
from fm_multi.tasks import chat, classify, detect, summarize, transcribe
from fm_multi.tasks.language import TextCodec

TASK_MODULES = {"chat": chat, "summarize": summarize, "classify": classify, "detect": detect,
                "transcribe": transcribe}


def dataset(task: str, root, split: str):
    """The loader of `task`'s part of a built data folder (see fm_multi/data/loaders.py)."""
    from fm_multi.data import loaders

    classes = {"chat": loaders.ChatDataset, "summarize": loaders.SummarizeDataset,
               "classify": loaders.ClassifyDataset, "detect": loaders.DetectDataset,
               "transcribe": loaders.SpeechDataset}
    return classes[task](root, split)


def collate_fn(task: str, codec: TextCodec, config: ModelConfig, inference: bool = False) -> Callable:
    """examples -> one model batch, with the sizes this model takes. `inference` adds what only served
    predictions read (classification's centre views), which training has no use for."""
    if task in ("chat", "summarize"):
        return functools.partial(TASK_MODULES[task].collate, codec=codec, max_len=config.max_seq_len)
    if task == "classify":
        return functools.partial(classify.collate, image_size=config.image_size, centre=inference)
    if task == "detect":
        return functools.partial(detect.collate, image_size=config.detect_image_size)
    return transcribe.collate


def augment_classify(item: tuple, rng: random.Random) -> tuple:
    """(PIL image, label) -> a crop of 70-100% of the area (aspect 3:4 to 4:3), flipped half the time,
    drawn as line art a quarter of the time (see line_art), then recoloured (see jitter_colour)."""
    image, label = item
    W, H = image.size
    area, aspect = rng.uniform(0.7, 1.0) * W * H, math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w, h = min(W, round(math.sqrt(area * aspect))), min(H, round(math.sqrt(area / aspect)))
    x0, y0 = rng.randint(0, W - w), rng.randint(0, H - h)
    image = image.crop((x0, y0, x0 + w, y0 + h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < LINE_ART:
        image = line_art(image, rng)
    return jitter_colour(image, rng), label


LINE_ART = 0.25   # share of classification pictures and of detection scenes redrawn by line_art


def line_art(image: Image.Image, rng: random.Random) -> Image.Image:
    """Half the time flat fills (see flatten_colours), then dark outlines (see ink_outline): the look of
    line-art emoji sets, which the trained styles lack."""
    if rng.random() < 0.5:
        image = flatten_colours(image, rng)
    return ink_outline(image, rng)


def flatten_colours(image: Image.Image, rng: random.Random) -> Image.Image:
    """Reduce the picture to 6-16 colours (median cut): shading and gradients become flat fills."""
    return image.quantize(colors=rng.randint(6, 16), method=Image.Quantize.MEDIANCUT).convert("RGB")


def ink_outline(image: Image.Image, rng: random.Random) -> Image.Image:
    """Draw near-black lines, 1-3 px wide, over the picture's strong edges. The blur first keeps JPEG
    noise and fine texture from turning into ink."""
    grey = np.asarray(image.convert("L").filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
    strength = np.hypot(*np.gradient(grey))                      # grey levels per pixel
    mask = Image.fromarray(((strength > rng.uniform(12, 24)) * 255).astype(np.uint8))
    if rng.random() < 0.5:
        mask = mask.filter(ImageFilter.MaxFilter(3))
    ink = Image.new("RGB", image.size, tuple(rng.randint(0, 50) for _ in range(3)))
    return Image.composite(ink, image, mask)


def jitter_colour(image: Image.Image, rng: random.Random) -> Image.Image:
    """80% of the time brightness, contrast and saturation each x0.6-1.4; then 20% of the time
    2-4 bits per channel (the flat colours of drawn emoji sets), 10% of the time grey."""
    if rng.random() < 0.8:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.2:
        image = ImageOps.posterize(image, rng.randint(2, 4))
    if rng.random() < 0.1:
        image = ImageOps.grayscale(image).convert("RGB")
    return image


def augment_detect(item: tuple, rng: random.Random) -> tuple:
    """(PIL image, {"boxes" xyxy pixels, "labels"}) -> the whole scene redrawn as line art (see line_art)
    with chance LINE_ART, then mirrored left-right half the time; the boxes move with the picture. The
    whole scene rather than each box, so that no inked rectangle tells where an object is."""
    image, target = item
    if rng.random() < LINE_ART:
        image = line_art(image, rng)
    if rng.random() < 0.5:
        return item if image is item[0] else (image, target)
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4).clone()
    boxes[:, [0, 2]] = image.size[0] - boxes[:, [2, 0]]
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {**target, "boxes": boxes}


def augment_speech(item: dict, rng: random.Random, mel_warp: float = 0.1) -> dict:
    """{"audio": 16 kHz samples, ...} -> played 0.9-1.1x as fast (the pitch moves with the speed, as
    from another voice), with 0-2 stretches of 0.1-0.25 s silenced, and a "warp" of 1 +- mel_warp for
    its log-mel (preprocess.warp_mel, applied by transcribe.collate: formants move with no change of
    tempo; mel_warp=0 leaves the log-mel as it is); the transcript is unchanged."""
    audio = np.asarray(item["audio"], dtype=np.float32)
    speed = rng.uniform(0.9, 1.1)
    n = max(1, round(len(audio) / speed))
    audio = np.interp(np.arange(n) * speed, np.arange(len(audio)), audio).astype(np.float32)
    for _ in range(rng.randint(0, 2)):
        width = min(n, rng.randint(1600, 4000))
        start = rng.randint(0, n - width)
        audio[start:start + width] = 0.0
    return {**item, "audio": audio, "warp": rng.uniform(1 - mel_warp, 1 + mel_warp)}


AUGMENT = {"classify": augment_classify, "detect": augment_detect}   # speech's takes mel_warp: see train_stream


class Seeded(Dataset):
    """data[(i, seed)] -> augment(data[i], Random(seed)); the seed comes with the index."""

    def __init__(self, data, augment: Callable | None = None):
        self.data, self.augment = data, augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, str]):
        i, seed = key
        item = self.data[i]
        return self.augment(item, random.Random(seed)) if self.augment else item


class BatchOrder(Sampler):
    """Endless batches of dataset indices for one rank, starting at batch number `start`.

    Every epoch is cut into whole batches (a short last batch is dropped) so batch numbers map to
    the same examples on every run. A dataset smaller than one batch yields the whole shard.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0):
        if n < 1:
            raise ValueError("cannot stream an empty dataset")
        self.sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed)
        self.batch_size = min(batch_size, len(self.sampler))
        self.batches_per_epoch = len(self.sampler) // self.batch_size
        self.seed, self.rank, self.start = seed, rank, start
        self._epoch, self._order = -1, []

    def batch(self, k: int) -> list[int]:
        epoch, j = divmod(k, self.batches_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        return self._order[j * self.batch_size:(j + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, str]]]:
        """Batches of (index, augmentation seed) pairs, from batch number `start` on."""
        k = self.start
        while True:
            yield [(i, f"{self.seed}/{self.rank}/{k}/{j}") for j, i in enumerate(self.batch(k))]
            k += 1


def train_stream(task: str, data, collate: Callable, batch_size: int, seed: int, start: int,
                 rank: int, world_size: int, num_workers: int, pin_memory: bool = False, *,
                 mel_warp: float) -> Iterator[dict]:
    """An endless iterator of collated (augmented) batches of `task`, from batch number `start`;
    mel_warp goes to augment_speech."""
    order = BatchOrder(len(data), batch_size, seed, rank, world_size, start)
    augment = functools.partial(augment_speech, mel_warp=mel_warp) if task == "transcribe" else AUGMENT.get(task)
    loader = DataLoader(Seeded(data, augment), batch_sampler=order, collate_fn=collate, num_workers=num_workers,
                        persistent_workers=num_workers > 0, pin_memory=pin_memory,
                        # A private generator: creating the loader must not draw from torch's
                        # global RNG, or a resumed run would diverge from an uninterrupted one.
                        generator=torch.Generator().manual_seed(seed))
    return iter(loader)


def val_subset(n: int, limit: int) -> list[int]:
    """A fixed spread of `limit` indices: val files are grouped (by class, by voice), so their
    first rows would not represent the whole set."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    return sorted(order[:limit])


def to_device(batch, device: torch.device):
    """Move every tensor of a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


def batch_size_of(batch: dict) -> int:
    for key in ("idx", "pixels", "mel"):
        if key in batch:
            return batch[key].size(0)
    raise ValueError(f"batch has none of idx/pixels/mel: {sorted(batch)}")


def batch_tokens(task: str, batch: dict, config: ModelConfig) -> int:
    """Tokens the backbone reads for this batch (text positions, patches + CLS, audio frames)."""
    if task in ("chat", "summarize"):
        return int(batch["idx"].numel())
    if task in ("classify", "detect"):
        B, _, H, W = batch["pixels"].shape
        return B * ((H // config.patch_size) * (W // config.patch_size) + 1)
    frames = torch.div(batch["mel_lengths"] + config.audio_stride - 1, config.audio_stride, rounding_mode="floor")
    return int(frames.sum())

