"""Multi-Band Diffusion: high-fidelity audio from discrete codec tokens or log-mel spectrograms."""

from .api import decode, vocode
from .eq import re_eq
from .options import RuntimeOptions
from .pipeline import MultiBandDiffusion

__version__ = "0.1.0"
__all__ = ["MultiBandDiffusion", "RuntimeOptions", "decode", "re_eq", "vocode", "__version__"]
