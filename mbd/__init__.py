"""Multi-Band Diffusion: high-fidelity audio from discrete codec tokens."""

from .api import decode
from .eq import re_eq
from .options import InferenceOptions
from .pipeline import MultiBandDiffusion

__version__ = "0.1.0"
__all__ = ["InferenceOptions", "MultiBandDiffusion", "decode", "re_eq", "__version__"]
