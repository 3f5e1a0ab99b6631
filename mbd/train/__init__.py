"""Training MBD band models on your own audio and codec (San Roman et al. 2023; AudioCraft's
audiocraft/solvers/diffusion.py).

Nothing in the inference package imports this one. Entry points: `python -m mbd.train RECIPE.toml`
(see `mbd.train.cli`), or `load_recipe` + `train` from Python.
"""

from .config import RecipeError, TrainConfig, load_recipe
from .data import DataError
from .state import assemble
from .trainer import TrainResult, train, train_band

__all__ = ["DataError", "RecipeError", "TrainConfig", "TrainResult", "assemble", "load_recipe", "train", "train_band"]
