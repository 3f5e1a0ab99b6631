"""Training logs: CSV files, optional TensorBoard events and a progress display.

`train.csv` gets one row per `log.log_every` steps, `valid.csv` one row per validation. TensorBoard is used
only when the `tensorboard` package is installed; the progress bar is tqdm's.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tqdm import tqdm


class CsvLog:
    """Append rows to a CSV file, writing the header once (also when resuming)."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        if not path.is_file() or path.stat().st_size == 0:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(columns)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a resumed run rewrites them)."""
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerows(kept)


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a log CSV as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Board:
    """TensorBoard scalars when available; a no-op otherwise."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(str(folder))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A tqdm bar showing loss and speed; nothing when disabled."""

    def __init__(self, total: int, start: int, enabled: bool, desc: str) -> None:
        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True) if enabled else None

    def update(self, n: int, values: dict[str, float]) -> None:
        """Advance by `n` steps and show `values` (e.g. loss, steps/s)."""
        text = {k: f"{v:.4g}" for k, v in values.items()}
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
