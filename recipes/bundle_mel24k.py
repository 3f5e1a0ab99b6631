"""Bundle a trained spectral model as mel24k: store its EMA weights in fp16 (the fitted sigmas stay float32)
as checkpoints/mel24k.safetensors, with the default `vocode` path chosen by measurement (checkpoints/mel24k.md),
and record the file's size and sha256 in checkpoints/manifest.toml.

    python recipes/bundle_mel24k.py runs/mel24k/model.safetensors [--griffin-lim N] [--model-magnitude W]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
from pathlib import Path

from mbd.spectral_mbd import SpectralMBD

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the trained model (runs/mel24k/model.safetensors)")
    parser.add_argument("--griffin-lim", type=int, default=32, help="default Griffin-Lim iterations of vocode")
    parser.add_argument("--model-magnitude", type=float, default=0.0, help="default model_magnitude of vocode")
    args = parser.parse_args()
    target = REPO / "checkpoints" / "mel24k.safetensors"
    model = SpectralMBD.from_pretrained(args.source)
    model.config = dataclasses.replace(model.config, griffin_lim=args.griffin_lim,
                                       model_magnitude=args.model_magnitude)
    model.save(target, half=True)
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
    main()
