"""Configuration: the model and training dataclasses and their presets.

Only builders read a config; layers take explicit ints (see model/). The training presets carry
the same names as the model presets (`tiny`, `small`, `base`) and are tuned for them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# The CTC alphabet for speech-to-text: index 0 is the CTC blank.
CTC_ALPHABET = ["<blank>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]


@dataclass
class ModelConfig:
    vocab_size: int = 8192        # BPE vocabulary (set from the tokenizer)
    d_model: int = 256
    n_layer: int = 6
    n_head: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.0
    max_seq_len: int = 384        # text positions (prompt + generation)
    image_size: int = 64          # classification input side, pixels
    detect_image_size: int = 128  # detection input side, pixels
    patch_size: int = 8           # ViT patch side; positions interpolate to other sizes
    # How pixels become patch tokens: "patch" (one linear map per patch, as ViT) or "conv" (a stack
    # of stride-2 3x3 convolutions, as Xiao et al., 2021, which trains faster from scratch). The
    # default is "patch" so that config files written before the key existed still load.
    vision_stem: str = "patch"
    n_mels: int = 80              # log-mel bins (16 kHz, 10 ms hop)
    audio_stride: int = 4         # time subsampling of the audio encoder: 40 ms per token
    max_audio_seconds: float = 30.0
    n_classify: int = 10          # set from labels.json
    n_detect: int = 10            # set from labels.json
    n_ctc: int = len(CTC_ALPHABET)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if self.vision_stem not in ("patch", "conv"):
            raise ValueError(f"vision_stem must be 'patch' or 'conv', got {self.vision_stem!r}")
        if self.vision_stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"vision_stem 'conv' needs a power-of-two patch_size, got {self.patch_size}")
        for side in (self.image_size, self.detect_image_size):
            if side % self.patch_size:
                raise ValueError(f"image side {side} must be a multiple of patch_size={self.patch_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


def tiny() -> ModelConfig:
    """Seconds-per-step model for tests."""
    return ModelConfig(d_model=64, n_layer=2, n_head=4, max_seq_len=256, image_size=32,
                       detect_image_size=64, patch_size=8, vision_stem="conv")


def small() -> ModelConfig:
    """The CPU default: trains on 2 cores, ~15 MB in bf16."""
    return ModelConfig(d_model=256, n_layer=6, n_head=8, vision_stem="conv")


def base() -> ModelConfig:
    """A GPU-sized model (ViT-B / GPT-2 small widths)."""
    return ModelConfig(d_model=768, n_layer=12, n_head=12, max_seq_len=1024, image_size=128,
                       detect_image_size=256, patch_size=16, vision_stem="conv")


PRESETS = {"tiny": tiny, "small": small, "base": base}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    return ModelConfig.from_dict({**cfg.to_dict(), **overrides})


# --- training -------------------------------------------------------------------------------------
TASK_NAMES = ("chat", "summarize", "classify", "detect", "transcribe")


def _per_task(**values) -> dict:
    return {t: values[t] for t in TASK_NAMES}


@dataclass
class TrainConfig:
    """Everything the training loop reads; one optimizer step = grad_accum micro-batches.

    The defaults are the `small` preset on 2 CPU cores. Batch sizes give every task about 2,000
    backbone tokens per micro-batch (32 chats of ~60 tokens, 8 documents of ~200, 32 pictures of 65
    patches, 8 scenes of 257, 16 clips of ~65 audio tokens), so a step costs about the same whatever
    its task. The weights favour detection and speech, whose dense and CTC objectives need the most
    updates to leave their plateaus (all-background, all-blank).
    """
    max_steps: int = 3000
    # Per task: examples per micro-batch, share of micro-batches, and a multiplier on its loss.
    batch_size: dict = field(default_factory=lambda: _per_task(
        chat=32, summarize=8, classify=32, detect=8, transcribe=16))
    task_weights: dict = field(default_factory=lambda: _per_task(
        chat=2.0, summarize=2.0, classify=2.0, detect=3.0, transcribe=3.0))
    loss_weights: dict = field(default_factory=lambda: _per_task(
        chat=1.0, summarize=1.0, classify=1.0, detect=1.0, transcribe=1.0))
    # Speech augmentation: each training clip's log-mel frequency axis is stretched by a factor drawn
    # from 1 +- mel_warp (streams.augment_speech); 0 turns the stretch off.
    mel_warp: float = 0.1
    task_schedule: str = "round_robin"   # "round_robin" (weighted, smooth) or "sample" (i.i.d. draws)
    grad_accum: int = 1
    lr: float = 1e-3
    # "cosine": warm-up, then a cosine down to lr * min_lr_ratio at max_steps. "wsd" (warm-up, stable,
    # decay): warm-up, a constant lr, then a straight line down over the last decay_ratio of the steps.
    # wsd keeps the state where its decay starts (checkpoints/stable_<step>.pt); resuming from it with
    # a larger --max-steps goes on at the constant rate, so training in sessions pays no warm restart.
    lr_schedule: str = "cosine"
    decay_ratio: float = 0.2
    min_lr_ratio: float = 0.1            # the schedule ends at lr * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.1            # matrices only; norms, biases and embeddings get none
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0               # global gradient norm; 0 turns clipping off
    eval_every: int = 500
    eval_batches: int = 8                # validation micro-batches per task in an in-training eval
    checkpoint_every: int = 250
    keep_last: int = 2                   # resumable states kept besides the best one
    log_every: int = 10
    seed: int = 1337
    compile: bool = False
    # "bf16": matrix maths under bf16 autocast (weights and optimizer stay fp32); "fp32"; "auto": bf16
    # on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), else fp32. Measured on such a CPU
    # (2 cores), the shipped model: a step on one task's batch, 1 thread, is 1.2-1.5x faster (chat
    # 1.30, classify 1.23, detect 1.52, transcribe 1.19); a whole 60-step two-process run only 1.03x
    # (0.866 against 0.837 steps/s), as data loading and augmentation share the two cores.
    precision: str = "auto"
    num_workers: int = 0                 # DataLoader workers per task
    # CPU intra-op threads (0 = PyTorch's default, one per core). 1 on the shared 2-core machine:
    # OpenMP threads that wait for a busy core cost more than they give; measured there, small
    # preset, load ~3.5: 0.99 steps/s with 1 thread against 0.22 with 2. An idle machine may
    # prefer 2.
    threads: int = 1

    def __post_init__(self):
        for name in ("batch_size", "task_weights", "loss_weights"):
            value = getattr(self, name)
            if set(value) != set(TASK_NAMES):
                raise ValueError(f"{name} needs exactly the tasks {TASK_NAMES}, got {sorted(value)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.lr_schedule not in ("cosine", "wsd") or not 0 < self.decay_ratio <= 1:
            raise ValueError(f"lr_schedule must be 'cosine' or 'wsd' (got {self.lr_schedule!r}) and decay_ratio "
                             f"in (0, 1] (got {self.decay_ratio})")
        if not 0 <= self.mel_warp < 0.5:
            raise ValueError(f"mel_warp must be in [0, 0.5), got {self.mel_warp}")
        if self.task_schedule not in ("round_robin", "sample"):
            raise ValueError(f"task_schedule must be 'round_robin' or 'sample', got {self.task_schedule!r}")
        if sum(self.task_weights.values()) <= 0 or min(self.task_weights.values()) < 0:
            raise ValueError("task_weights must be >= 0 with a positive sum")
        if min(self.max_steps, self.grad_accum, self.eval_every, self.checkpoint_every, self.log_every) < 1:
            raise ValueError("max_steps, grad_accum and the intervals must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)


def train_tiny() -> TrainConfig:
    """Tests and smoke runs: small batches, frequent evaluation."""
    return TrainConfig(max_steps=300, warmup_steps=20, lr=2e-3, eval_every=100, checkpoint_every=100,
                       batch_size=_per_task(chat=8, summarize=4, classify=32, detect=4, transcribe=4))


def train_small() -> TrainConfig:
    """The CPU default checkpoint: 3,000 steps on the full data, ~65-70 min at the 0.79 steps/s
    measured with 1 thread on the shared 2-core machine (load ~4.5; 2 threads gave 0.22)."""
    return TrainConfig()


def train_base() -> TrainConfig:
    """A GPU run: bigger batches, bf16 autocast, torch.compile."""
    return TrainConfig(max_steps=20000, warmup_steps=1000, lr=6e-4, eval_every=1000, checkpoint_every=1000,
                       batch_size=_per_task(chat=64, summarize=32, classify=128, detect=32, transcribe=32),
                       compile=True, num_workers=4, threads=0)


TRAIN_PRESETS = {"tiny": train_tiny, "small": train_small, "base": train_base}


def train_preset(name: str, **overrides) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
    return TrainConfig.from_dict({**TRAIN_PRESETS[name]().to_dict(), **overrides})
