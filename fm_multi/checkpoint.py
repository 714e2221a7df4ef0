"""The checkpoint format: a folder with config.json, model.safetensors, tokenizer.json,
labels.json, README.md (the model card) and, optionally, speech_lm.json.gz (speech-to-text's language
model, speech_lm.py). Local folders and Hugging Face Hub repo ids load alike.

Loading never unpickles: weights are safetensors, everything else JSON. Every problem is raised as
a CheckpointError whose message names the file at fault.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch

from fm_multi.config import ModelConfig
from fm_multi.model import FMMulti

FORMAT_VERSION = 1
SPEECH_LM = "speech_lm.json.gz"  # optional: speech-to-text's beam search uses it when present (speech_lm.py)
FILES = ("config.json", "model.safetensors", "tokenizer.json", "labels.json", "README.md", SPEECH_LM)
REQUIRED = FILES[:4]
CARD_EXTRAS = ("*.png", "measurements.json")  # figures and numbers the model card (fm-multi card) refers to
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class CheckpointError(ValueError):
    pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash or a full disk leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; a checkpoint is meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(out_dir, model: FMMulti, tokenizer, labels: dict, card: str | None = None,
                    dtype: torch.dtype | None = None, meta: dict | None = None) -> Path:
    """Write the five files. dtype=torch.bfloat16 halves the size on disk; loading casts back."""
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    config = {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict(), **(meta or {})}
    write_atomic(out / "model.safetensors", save(state, metadata={"format": "pt"}))
    write_atomic(out / "tokenizer.json", tokenizer.to_str().encode())
    write_atomic(out / "labels.json", json.dumps(labels, indent=1).encode())
    write_atomic(out / "README.md", (card or default_card(model, labels)).encode())
    write_atomic(out / "config.json", json.dumps(config, indent=2).encode())  # last: marks completion
    return out


def default_card(model: FMMulti, labels: dict) -> str:
    counts = model.parameter_counts()
    return ("---\nlibrary_name: fm-multi\nlicense: apache-2.0\ntags: [multimodal]\n---\n"
            "# fm_multi checkpoint\n\nNo measurements yet: run `fm-multi card` to write this card.\n\n"
            f"Parameters: {counts['total']:,}. Classes: {len(labels.get('classify', []))}.\n")


def resolve(path_or_repo: str | os.PathLike) -> Path:
    """A local folder as is; a Hub repo id is downloaded (or read from the local Hub cache)."""
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_repo)
    if path.exists():
        raise CheckpointError(f"{name} is a file; a checkpoint is a folder holding {', '.join(REQUIRED)}")
    if not REPO_ID.match(name) or ".." in name:
        raise CheckpointError(f"{name!r} is neither a local checkpoint folder nor a Hugging Face repo id "
                              "(owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=[*FILES, *CARD_EXTRAS]))
    except Exception as e:  # network, auth, missing repo: one sentence, no traceback
        raise CheckpointError(f"could not fetch {name!r} from the Hugging Face Hub "
                              f"(offline, private or missing?): {type(e).__name__}") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def load_config(folder: Path) -> ModelConfig:
    data = _read_json(folder / "config.json")
    if data.get("format_version") != FORMAT_VERSION or "model_config" not in data:
        raise CheckpointError(f"{folder / 'config.json'} is not an fm_multi config "
                              f"(format_version {data.get('format_version')!r}, expected {FORMAT_VERSION})")
    try:
        return ModelConfig.from_dict(data["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors as a state dict; a missing or damaged file is a CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e})") from None


def load_weights(folder: Path, model: FMMulti) -> None:
    path, state = folder / "model.safetensors", read_weights(folder)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match config.json: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(v.shape)}, "
                                  f"config.json implies {tuple(expected[k].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def load_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path} is not a valid tokenizers file ({e})") from None


def load_labels(folder: Path, config: ModelConfig) -> dict:
    path = folder / "labels.json"
    labels = _read_json(path)
    for task, n in (("classify", config.n_classify), ("detect", config.n_detect)):
        names = labels.get(task)
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise CheckpointError(f"{path} needs a list of names under {task!r}")
        if len(names) != n:
            raise CheckpointError(f"{path} lists {len(names)} {task} labels, config.json says {n}")
    return labels


def load_checkpoint(path_or_repo, device: str | torch.device = "cpu"):
    """-> (model in eval mode on device, tokenizer, labels, folder)."""
    folder = resolve(path_or_repo)
    config = load_config(folder)
    tokenizer = load_tokenizer(folder)
    if tokenizer.get_vocab_size() != config.vocab_size:
        raise CheckpointError(f"{folder / 'tokenizer.json'} has {tokenizer.get_vocab_size()} tokens, "
                              f"config.json says vocab_size {config.vocab_size}")
    labels = load_labels(folder, config)
    model = FMMulti(config)
    load_weights(folder, model)
    return model.to(device).eval(), tokenizer, labels, folder


def push_to_hub(folder, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a checkpoint folder to the Hub; returns the repo URL."""
    from huggingface_hub import HfApi

    if not REPO_ID.match(repo_id):
        raise CheckpointError(f"{repo_id!r} is not a valid Hub repo id (owner/name)")
    folder = Path(folder)
    for name in REQUIRED:
        if not (folder / name).exists():
            raise CheckpointError(f"{folder / name} is missing; nothing was uploaded")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=[*FILES, *CARD_EXTRAS])
    return str(url)
