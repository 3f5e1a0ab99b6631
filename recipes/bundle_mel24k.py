"""Bundle a trained spectral model as mel24k: store its EMA weights in fp16 (the fitted sigmas stay float32)
as checkpoints/mel24k.safetensors and record the file's size and sha256 in checkpoints/manifest.toml.

    python recipes/bundle_mel24k.py runs/mel24k/model.safetensors
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from mbd.spectral_mbd import SpectralMBD

REPO = Path(__file__).resolve().parents[1]


def main(source: str) -> None:
    target = REPO / "checkpoints" / "mel24k.safetensors"
    SpectralMBD.from_pretrained(source).save(target, half=True)
    data = target.read_bytes()
    manifest = REPO / "checkpoints" / "manifest.toml"
    text = manifest.read_text()
    entry = text.index("[model.mel24k]")
    end = text.find("\n[", entry + 1)
    end = len(text) if end < 0 else end
    block = re.sub(r'sha256 = "[0-9a-f]+"', f'sha256 = "{hashlib.sha256(data).hexdigest()}"', text[entry:end])
    block = re.sub(r"size = \d+", f"size = {len(data)}", block)
    manifest.write_text(text[:entry] + block + text[end:])
    print(f"wrote {target} ({len(data):,} bytes) and its sha256 to {manifest}")


if __name__ == "__main__":
    main(sys.argv[1])
