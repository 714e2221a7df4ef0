"""The Hugging Face Space's requirements.txt must install what pyproject.toml declares."""
from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def specs(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def test_requirements_txt_matches_pyproject_dependencies():
    declared = specs(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = specs(line for line in lines if line)
    assert sorted(set(declared) - set(listed)) == [], "in pyproject.toml but not in requirements.txt"
    assert sorted(set(listed) - set(declared)) == [], "in requirements.txt but not in pyproject.toml"
    for name, req in declared.items():
        assert listed[name].specifier == req.specifier, f"{name}: {listed[name]} != {req}"
        assert listed[name].marker == req.marker and listed[name].extras == req.extras, name


def test_packages_txt_lists_debian_package_names():
    names = [line.strip() for line in (ROOT / "packages.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert {"ffmpeg", "libsndfile1"} <= set(names)
    assert all(n.replace("-", "").replace(".", "").replace("+", "").isalnum() and n.islower() for n in names)
