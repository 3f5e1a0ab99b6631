"""The package's user-facing error types: a bad input, file or setting, as opposed to a bug.

Every error raised for something the user can fix derives from `MBDError`; the command line prints these as
one line (exit code 2) and lets anything else show its traceback. The input errors also derive from
`ValueError`, so `except ValueError` keeps catching them. `mbd.hub.DownloadError` (a network or cache
problem) is the one user-facing error defined elsewhere.
"""

from __future__ import annotations


class MBDError(Exception):
    """Base of the errors the user can fix; the message names the file or setting and the problem."""


class InputError(MBDError, ValueError):
    """A bad argument value or input data: an option, a step list, a tensor of the wrong shape or kind."""


class TokenError(InputError):
    """A token file or tensor cannot be used as codes; the message names the file and the problem."""


class AudioError(InputError):
    """An audio file cannot be read or written; the message names the file."""


class MelError(InputError):
    """A mel spectrogram does not fit the model (shape, orientation, values)."""


class OutputError(MBDError, FloatingPointError):
    """A model produced NaN or infinite audio (non-finite weights or conditioning); nothing is returned."""


class CheckpointError(MBDError, ValueError):
    """A checkpoint file is unreadable, unsafe or inconsistent."""


class RecipeError(InputError):
    """A training recipe is malformed or inconsistent."""


class DataError(InputError):
    """A training data set is missing, empty or too small for the recipe."""


class CommandError(MBDError):
    """A whole command cannot run (not one file of a batch)."""
