"""Shared fixtures: one small offline data build per test session."""

import os

import pytest


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """Path of a `fm-multi data build --small` folder, built once per session (~10 s, no network).

    Parts whose Debian/PyPI sources are not installed are left out; tests of those parts skip.
    """
    from fm_multi.data import build, deps
    out = tmp_path_factory.mktemp("data_small")
    tasks = [t for t in build.TASKS if not deps.missing(t)]
    if not {"summarize", "chat"} <= set(tasks):
        tasks = [t for t in tasks if t != "tokenizer"]     # it is trained on the text parts
    build.build(out, small=True, tasks=tasks, seed=0, workers=min(2, os.cpu_count() or 1))
    return out
