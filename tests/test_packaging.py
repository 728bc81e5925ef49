"""Packaging: the license, the slim test extra, presets inside the package (no symlink) and a complete sdist."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_is_the_apache_2_text():
    """LICENSE holds the full Apache License 2.0 and the metadata declares it."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_classifiers_name_status_and_python_versions():
    """The classifiers give the development status and the tested Python version."""
    classifiers = PYPROJECT["project"]["classifiers"]
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Programming Language :: Python :: 3.11" in classifiers


def test_test_extra_is_slim_and_all_holds_the_integrations():
    """The test extra pulls only what the core tests need; the integrations are in the all extra."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {requirement.split(">")[0].split("<")[0].split("[")[0].strip() for requirement in extras["test"]}
    assert names == {"pytest", "pytest-asyncio", "hypothesis", "gguf", "accelerate"}
    assert extras["all"] == ["sentence-transformers-tp[gguf,eval,langchain,llamaindex,ray,hybrid]"]


def test_no_symlinks_in_the_package():
    """The package (presets included) has no symlinks, so Windows checkouts work."""
    package = ROOT / "sentence_transformers_tp"
    assert [p for p in package.rglob("*") if p.is_symlink()] == []
    assert sorted(p.name for p in (package / "configs").glob("*.yaml"))


def test_sdist_is_complete(tmp_path, monkeypatch):
    """The sdist holds the license, the presets, the tests with their conftest.py and fixtures, and the CI script."""
    build_meta = pytest.importorskip("setuptools.build_meta")
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building needs setuptools>=77 (PEP 639 license metadata), as pyproject's build-system says")
    monkeypatch.chdir(ROOT)
    name = build_meta.build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as archive:
        members = {member.split("/", 1)[1] for member in archive.getnames() if "/" in member}
    expected = {
        "LICENSE",
        "README.md",
        "pyproject.toml",
        ".ci/run",
        "tests/conftest.py",
        "tests/cli/__init__.py",
        "tests/evaluation/conftest.py",
        "tests/evaluation/fixtures/data/sts/stsb/dev.tsv",
        "sentence_transformers_tp/configs/smollm2.yaml",
        "sentence_transformers_tp/model_card_template.md",
    }
    assert expected <= members, expected - members


def test_ci_floor_is_the_lower_bound_of_the_declared_ranges():
    """.ci/floor-constraints.txt pins exactly the lower bounds of pyproject's torch/transformers/ST ranges."""
    from packaging.requirements import Requirement

    floors = {}
    for requirement in map(Requirement, PYPROJECT["project"]["dependencies"]):
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if lower:
            floors[requirement.name] = lower[0]
    pins = {}
    for line in (ROOT / ".ci" / "floor-constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    assert pins == {name: floors[name] for name in ("torch", "transformers", "sentence-transformers")}
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "floor-constraints.txt" in script and '"$status" -eq 5' in script
