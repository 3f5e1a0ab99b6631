"""Packaging: a regular (non-editable) install ships every subpackage, the bundled files and the console script."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_subpackage_is_listed() -> None:
    setuptools = _project()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "mbd").rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert setuptools["package-dir"]["mbd.checkpoints"] == "checkpoints"


def test_bundled_files_are_package_data() -> None:
    data = _project()["tool"]["setuptools"]["package-data"]["mbd.checkpoints"]
    for name in ("manifest.toml", "mel24k.safetensors", "mel24k.md"):
        assert (REPO / "checkpoints" / name).is_file()
        assert any(Path(name).match(pattern) for pattern in data), name


def test_console_script() -> None:
    assert _project()["project"]["scripts"] == {"mbd": "mbd.cli:main"}
