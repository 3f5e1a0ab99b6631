"""Reading numpy arrays from user files without trusting them: sizes are checked from the headers before
anything is read or inflated, and any byte order is converted to the machine's.

A `.npy` header states the array's shape and dtype (numpy's `numpy.lib.format`), and so does the header of
each `.npy` member of an `.npz` zip archive, which can be read without inflating the rest of the member; an
array whose byte size exceeds `MAX_ARRAY_BYTES` (or the memory limit, if lower) is refused before it is
loaded, so a small compressed file cannot inflate to gigabytes.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.lib import format as npy_format

from .errors import InputError
from .memory import format_bytes, memory_limit

MAX_ARRAY_BYTES = 1 << 30
"""The largest input array read (1 GiB: about 120 hours of 4-codebook tokens, 7 hours of a 100-bin mel)."""


class ArrayTooLarge(InputError):
    """An array in a file is bigger than the input limit; the message names the file and the size."""


def array_limit() -> int:
    """Bytes an input array may hold: `MAX_ARRAY_BYTES`, or the memory limit if lower (`mbd.memory`)."""
    return min(MAX_ARRAY_BYTES, memory_limit())


def _check_header(fo: object, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Read a `.npy` header from `fo` and refuse an array over `array_limit()`."""
    version = npy_format.read_magic(fo)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(fo)
    elif version == (2, 0):
        shape, _, dtype = npy_format.read_array_header_2_0(fo)
    else:
        raise ValueError(f"{name}: unsupported .npy format version {version}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > array_limit():
        raise ArrayTooLarge(
            f"{name}: holds a {list(shape)} {dtype} array of {format_bytes(size)}, over the "
            f"{format_bytes(array_limit())} input limit"
        )
    return shape, dtype


def native(array: np.ndarray) -> np.ndarray:
    """`array` in the machine's byte order (a big-endian file's array is converted, not refused)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def load_npy(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """A `.npy` array (no pickles), size-checked from its header before it is read, in native byte order.

    Raises:
        ArrayTooLarge: the array is over `array_limit()`.
        ValueError, OSError: an unreadable or corrupted file (numpy's errors).
    """
    name = str(path) if name is None else name
    with open(path, "rb") as fo:
        _check_header(fo, name)
    return native(np.load(path, allow_pickle=False))


def load_npz_member(npz: np.lib.npyio.NpzFile, key: str, name: str) -> np.ndarray:
    """Member `key` of an open `.npz`, its header size-checked before the member is inflated.

    Raises:
        ArrayTooLarge: the array is over `array_limit()`.
    """
    member = key if key in npz.zip.namelist() else f"{key}.npy"
    with npz.zip.open(member) as fo:
        _check_header(fo, f"{name} (key '{key}')")
    return native(npz[key])
