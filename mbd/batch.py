"""Many files in, many files out: input discovery, output planning and per-file failure reporting for the CLI.

Output names are planned for the whole batch before any work (`OutputPlan`): two inputs that would write one
file, or an output that would replace an input, are refused up front, naming both files.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CommandError

TOKEN_SUFFIXES = (".npy", ".npz", ".pt", ".ecdc")
MEL_SUFFIXES = (".npy",)


def printable(text: object) -> str:
    """`text` with control characters (terminal escapes, newlines, undecodable bytes of a file name) shown
    escaped as Python writes them in a `repr` (`\\x1b`, `\\n`, `\\udcff`), so that a file name cannot rewrite
    the terminal or split a one-line message. Every message the CLI prints goes through this."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


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
        self.failed.append(printable(message))
        print(f"mbd: error: {printable(message)}", file=sys.stderr)

    def note(self, path: Path, message: str) -> None:
        print(f"mbd: note: {printable(path)}: {printable(message)}", file=sys.stderr)

    def warn(self, message: str) -> None:
        """A problem that skips no requested file (an unreadable subfolder): printed, not counted."""
        print(f"mbd: warning: {printable(message)}", file=sys.stderr)

    def summary(self, verb: str) -> int:
        """Print the summary and return the exit code (0, or 2 when any file failed)."""
        if self.failed:
            print(f"mbd: {verb} {len(self.done)} file(s); {len(self.failed)} failed:", file=sys.stderr)
            for message in self.failed:
                print(f"  {message}", file=sys.stderr)
            return 2
        print(f"mbd: {verb} {len(self.done)} file(s)", file=sys.stderr)
        return 0


def _walk(folder: Path, suffixes: tuple[str, ...], report: Report) -> list[Path]:
    """Regular files under `folder` ending in `suffixes`, sorted; a subfolder that cannot be listed is a
    warning. Symbolic links to folders are followed, each real folder once."""
    found: list[Path] = []
    seen: set[str] = set()

    def unreadable(err: OSError) -> None:
        report.warn(f"{err.filename}: folder skipped, cannot be listed ({err.strerror})")

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(root, f) for f in files if f.lower().endswith(suffixes) and Path(root, f).is_file()]
    return sorted(found)


def expand_inputs(arguments: list[str], suffixes: tuple[str, ...], report: Report) -> list[Item]:
    """Files, globs and folders (searched recursively for `suffixes`) to a sorted, de-duplicated list."""
    items: dict[Path, Item] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = _walk(path, suffixes, report)
            if not found:
                report.fail(f"{path}: folder holds no {'/'.join(suffixes)} files")
            for p in found:
                items.setdefault(p.resolve(), Item(p, p.relative_to(path)))
        elif path.is_file():
            items.setdefault(path.resolve(), Item(path, Path(path.name)))
        elif path.exists():
            report.fail(f"{path}: not a regular file or folder")
        elif glob.has_magic(argument):
            found = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not found:
                report.fail(f"{argument}: pattern matches no file")
            for p in found:
                items.setdefault(p.resolve(), Item(p, Path(p.name)))
        else:
            report.fail(f"{path}: no such file or folder")
    return list(items.values())


def writable_folder(folder: Path) -> None:
    """Refuse (`CommandError`) a folder that cannot be created or written: its nearest existing ancestor must
    be a folder the process may write to."""
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise CommandError(f"{folder}: cannot create this folder, {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"{existing}: folder is not writable")


@dataclass
class OutputPlan:
    """Where each input's results go, decided for the whole batch before any work.

    `-o` names a file when it ends in one of `suffixes` and there is one input file (not a folder argument);
    an existing folder, or a name without an extension, is a folder that mirrors the inputs' relative paths.
    Any other `-o` is refused, so that `-o out.mp3` never silently becomes a folder.

    Args:
        out: the `-o` argument.
        suffixes: the extensions this command writes (".wav", ".flac"; or ".npy", ".ecdc").
        fallback: the extension for folder output (`--format`).
        items: every input of the batch.
        single: one input file was given (not a folder argument).
    """

    out: Path
    suffixes: tuple[str, ...]
    fallback: str
    items: list[Item]
    single: bool
    to_file: bool = field(init=False)
    claimed: dict[Path, Path] = field(init=False, default_factory=dict)  # resolved output -> input

    def __post_init__(self) -> None:
        suffix = self.out.suffix.lower()
        names = " or ".join(self.suffixes)
        self.to_file = not self.out.is_dir() and suffix in self.suffixes
        if self.out.is_dir():
            pass
        elif self.out.exists() and not self.to_file:
            raise CommandError(f"-o {self.out}: exists and is not a folder or a {names} file")
        elif suffix and not self.to_file:
            raise CommandError(
                f"-o {self.out}: this command writes {names} files; name one of those, or a folder "
                "(an existing one, or a name without an extension)"
            )
        elif self.to_file and not self.single:
            inputs = f"there are {len(self.items)} inputs" if len(self.items) > 1 else "the input is a folder"
            raise CommandError(f"-o {self.out} names one file, but {inputs}; give a folder")
        writable_folder(self.out.parent if self.to_file else self.out)
        self.inputs = {item.path.resolve(): item.path for item in self.items}
        for item in self.items:
            self.claim(item, [self.path(item)])

    def path(self, item: Item, index: int | None = None) -> Path:
        """The output of `item` (clip `index` of a file holding several, numbered `name_{index}`)."""
        if self.to_file:
            if index is not None:
                raise CommandError(f"-o {self.out} names one file, but {item.path} holds several clips; give a folder")
            return self.out
        name = item.relative.with_suffix("")
        if index is not None:
            name = name.with_name(f"{name.name}_{index}")
        return self.out / name.with_suffix(self.fallback)

    def claim(self, item: Item, outputs: list[Path]) -> None:
        """Reserve `outputs` for `item`; an output that is an input, or already reserved for another input, is
        a `CommandError` naming both files."""
        for out in outputs:
            key = out.resolve()
            if key in self.inputs:
                raise CommandError(f"{item.path}: its output {out} would replace the input {self.inputs[key]}")
            other = self.claimed.get(key)
            if other is not None and other != item.path:
                raise CommandError(f"{other} and {item.path} would both be written to {out}; rename one of them")
        for out in outputs:
            self.claimed.setdefault(out.resolve(), item.path)
