"""Offline training data for fm_multi, built from what Debian and PyPI packages ship.

Builders, one per part: `classify.py`, `detect.py` (on `images.py`), `speech.py`, `text.py` and
`chat.py` (on `sources.py`), `tokenizer.py`; `build.py` runs them (`fm-multi data build`) and
`deps.py` installs their sources (`fm-multi data deps`). `loaders.py` holds the validating torch
Datasets the training code reads the built folders (or user data in the same formats) with.
"""
