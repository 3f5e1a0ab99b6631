"""Packaging: every subpackage and every file the code loads from `mbd.checkpoints` is declared, bundled files
match their manifest entries, and the console script points at a working entry point."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _bundled_files() -> set[str]:
    """The files of checkpoints/ that the code reads at run time: the manifest, and what bundled entries name."""
    manifest = tomllib.loads((REPO / "checkpoints" / "manifest.toml").read_text())
    files = {"manifest.toml"}
    for entry in manifest.get("model", {}).values():
        if entry.get("bundled"):
            files.add(entry["file"])
            if not entry.get("license_url", "").startswith("http"):  # a model card next to the manifest
                files.add(entry["license_url"])
    return files


def test_every_subpackage_is_listed() -> None:
    setuptools = _project()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "mbd").rglob("__init__.py")}
    assert "mbd.train" in found
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert setuptools["package-dir"]["mbd.checkpoints"] == "checkpoints"
    assert (REPO / "checkpoints" / "__init__.py").is_file()


def test_bundled_files_are_package_data() -> None:
    patterns = _project()["tool"]["setuptools"]["package-data"]["mbd.checkpoints"]
    files = _bundled_files()
    assert {"manifest.toml", "mel24k.safetensors", "mel24k.md"} <= files
    for name in files:
        assert (REPO / "checkpoints" / name).is_file(), name
        assert any(Path(name).match(pattern) for pattern in patterns), f"{name} is not package data"


def test_bundled_files_match_their_manifest_entries() -> None:
    manifest = tomllib.loads((REPO / "checkpoints" / "manifest.toml").read_text())
    bundled = [entry for entry in manifest["model"].values() if entry.get("bundled")]
    assert bundled
    for entry in bundled:
        data = (REPO / "checkpoints" / entry["file"]).read_bytes()
        assert len(data) == entry["size"], entry["file"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]


def test_console_script_entry_point_runs(capsys: pytest.CaptureFixture[str]) -> None:
    scripts = _project()["project"]["scripts"]
    assert set(scripts) == {"mbd"}
    module, _, attr = scripts["mbd"].partition(":")
    main = getattr(importlib.import_module(module), attr)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("decode", "vocode", "encode", "regenerate", "convert"))
