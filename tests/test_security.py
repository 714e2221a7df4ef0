"""Untrusted input on the loading path: no unpickling, atomic writes survive a failed write."""
from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pytest

import fm_multi
from fm_multi import checkpoint
from helpers import make_checkpoint

SOURCE = Path(fm_multi.__file__).parent


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_nothing_in_the_package_unpickles():
    """torch.load only with weights_only=True; no pickle, no eval/exec of strings."""
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names), path
        for call in _calls(tree):
            f = call.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("eval", "exec") and isinstance(f, ast.Name):
                pytest.fail(f"{path}: {name}() call")
            if name == "load" and isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "torch":
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                    f"{path}:{call.lineno} torch.load without weights_only=True"


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "c")
    before = (ckpt / "model.safetensors").read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        make_checkpoint(ckpt, seed=1)
    monkeypatch.undo()
    assert (ckpt / "model.safetensors").read_bytes() == before
    assert not [p for p in ckpt.iterdir() if p.name.endswith(".tmp")], "temporary files are cleaned up"
    checkpoint.load_checkpoint(ckpt)  # still loads


def test_checkpoint_files_are_plain_data(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c")
    head = (ckpt / "model.safetensors").read_bytes()[:8]
    header_len = int.from_bytes(head, "little")
    header = (ckpt / "model.safetensors").read_bytes()[8: 8 + header_len]
    assert header.startswith(b"{")  # safetensors: a JSON header then raw tensor bytes, nothing executable
