"""Many files in, many files out: input discovery, output naming and per-file failure reporting for the CLI."""

from __future__ import annotations

import glob
import sys
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_SUFFIXES = (".npy", ".npz", ".pt", ".ecdc")
MEL_SUFFIXES = (".npy",)


@dataclass(frozen=True)
class Item:
    """One input file and its name relative to the argument it came from (to mirror folder structure)."""

    path: Path
    relative: Path


@dataclass
class Report:
    """Successes and failures of a batch; failures are printed as they happen, one line each."""

    done: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failed.append(message)
        print(f"mbd: error: {message}", file=sys.stderr)

    def note(self, path: Path, message: str) -> None:
        print(f"mbd: note: {path}: {message}", file=sys.stderr)

    def summary(self, verb: str) -> int:
        """Print the summary and return the exit code (0, or 2 when any file failed)."""
        if self.failed:
            print(f"mbd: {verb} {len(self.done)} file(s); {len(self.failed)} failed:", file=sys.stderr)
            for message in self.failed:
                print(f"  {message}", file=sys.stderr)
            return 2
        print(f"mbd: {verb} {len(self.done)} file(s)", file=sys.stderr)
        return 0


def expand_inputs(arguments: list[str], suffixes: tuple[str, ...], report: Report) -> list[Item]:
    """Files, globs and folders (searched recursively for `suffixes`) to a sorted, de-duplicated list."""
    items: dict[Path, Item] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                report.fail(f"{path}: folder holds no {'/'.join(suffixes)} files")
            for p in found:
                items.setdefault(p.resolve(), Item(p, p.relative_to(path)))
        elif path.is_file():
            items.setdefault(path.resolve(), Item(path, Path(path.name)))
        elif glob.has_magic(argument):
            found = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not found:
                report.fail(f"{argument}: pattern matches no file")
            for p in found:
                items.setdefault(p.resolve(), Item(p, Path(p.name)))
        else:
            report.fail(f"{path}: no such file or folder")
    return list(items.values())


def output_path(out: Path, item: Item, single: bool, suffix: str, index: int | None = None) -> Path:
    """Where the result for `item` goes: `out` itself when it names a file for a single input, else a file
    under the folder `out` mirroring the input's relative path. `index` numbers clips of a batched file."""
    if single and out.suffix.lower() == suffix and index is None:
        return out
    name = item.relative.with_suffix("")
    if index is not None:
        name = name.with_name(f"{name.name}_{index}")
    return out / name.with_suffix(suffix)
