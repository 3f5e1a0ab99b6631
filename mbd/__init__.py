"""Multi-Band Diffusion: high-fidelity audio from discrete codec tokens."""

from .eq import re_eq
from .pipeline import MultiBandDiffusion

__version__ = "0.1.0"
__all__ = ["MultiBandDiffusion", "re_eq", "__version__"]
