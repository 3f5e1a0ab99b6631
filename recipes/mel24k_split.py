"""Write the train / held-out manifests of the `mel24k` recipe from the dev set's manifest.

The rule is fixed and by speaker or piece, so that no speaker, piece or recording is on both sides: a clip
is held out when its `speaker_or_piece_id` is `librispeech_441` (the README's example clip,
examples/speech.flac) or when `int(sha1(id), 16) % 13 == 0`. On the 236-clip dev set that holds out 21 clips
(9 speech, 5 music, 7 other; 2.1 of 22.6 minutes).

    python recipes/mel24k_split.py [DEV_DIR]   # default: ../../shared/data/dev from this folder
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["path", "kind", "speaker_or_piece_id", "license", "duration_s"]


def held_out(identity: str) -> bool:
    return identity == "librispeech_441" or int(hashlib.sha1(identity.encode()).hexdigest(), 16) % 13 == 0


def main(dev: Path) -> None:
    with open(dev / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    prefix = Path(os.path.relpath(dev.resolve(), HERE))
    for name, keep in [("mel24k_train.csv", False), ("mel24k_heldout.csv", True)]:
        chosen = [r for r in rows if held_out(r["speaker_or_piece_id"]) == keep]
        with open(HERE / name, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for row in chosen:
                writer.writerow({**row, "path": (prefix / row["path"]).as_posix()})
        print(f"{name}: {len(chosen)} clips")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[1] / "shared" / "data" / "dev")
