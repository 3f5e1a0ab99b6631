"""Command line for training: `python -m mbd.train RECIPE.toml ...` and `python -m mbd.train assemble ...`.

Errors in the recipe, the data or the checkpoints print one `error:` line and exit with status 2, before
any training starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TypeVar

from ..checkpoint import CheckpointError
from .config import RecipeError, TrainConfig, load_recipe
from .data import DataError
from .spectral_config import SpectralTrainConfig, is_spectral_recipe, load_spectral_recipe
from .state import assemble
from .trainer import train

Recipe = TypeVar("Recipe", TrainConfig, SpectralTrainConfig)


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mbd.train",
        description="Train MBD band models from a TOML recipe (one independent model per band). "
        "Use `python -m mbd.train assemble ...` to join band files into one model.",
    )
    p.add_argument("recipe", help="the TOML recipe (see recipes/README.md)")
    p.add_argument("--band", type=int, action="append", help="band index to train (repeatable); default: all")
    p.add_argument("--resume", action="store_true", help="continue from OUT/bandK/state.safetensors")
    p.add_argument("--out", help="run folder (default: the recipe's out_dir)")
    p.add_argument("--steps", type=int, help="override optim.steps")
    p.add_argument("--codec-weights", help="override codec.weights (a local codec weights file)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--max-seconds", type=float, help="override log.max_seconds: stop after a checkpoint once this "
                   "much wall time has passed (continue later with --resume)")
    return p


def _assemble_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mbd.train assemble", description="Join band model files (low band first) into one model."
    )
    p.add_argument("bands", nargs="+", help="band*.safetensors files, band 0 first")
    p.add_argument("-o", "--output", required=True, help="the multi-band model file to write")
    return p


def _with_limits(config: Recipe, args: argparse.Namespace) -> Recipe:
    """The recipe with `--steps` as its step budget and `--max-seconds` as its time limit, where given."""
    if args.steps is not None:
        if args.steps <= 0:
            raise RecipeError(f"--steps must be > 0, got {args.steps}")
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, steps=args.steps))
    if args.max_seconds is not None:
        if not args.max_seconds > 0:
            raise RecipeError(f"--max-seconds must be > 0, got {args.max_seconds}")
        config = dataclasses.replace(config, log=dataclasses.replace(config.log, max_seconds=args.max_seconds))
    return config


def _train_spectral(args: argparse.Namespace) -> int:
    """`family = "spectral"` recipes: one shared network for all bands (`mbd.train.spectral_trainer`)."""
    from .spectral_trainer import train as train_spectral

    if args.band or args.codec_weights:
        raise RecipeError("--band and --codec-weights do not apply to a spectral recipe (all bands train at once)")
    config = _with_limits(load_spectral_recipe(args.recipe), args)
    path = train_spectral(config, args.out, resume=args.resume)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the training command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] == "assemble":
            args = _assemble_parser().parse_args(argv[1:])
            config = assemble(args.bands, args.output)
            condition = config.codec.name if config.codec is not None else f"{config.features.n_mels}-bin log-mel"
            print(f"wrote {args.output}: {len(config.bands)} bands, {config.sample_rate} Hz, {condition}")
            return 0
        args = _train_parser().parse_args(argv)
        if is_spectral_recipe(args.recipe):
            return _train_spectral(args)
        config = _with_limits(load_recipe(args.recipe), args)
        if args.codec_weights is not None:
            weights = str(Path(args.codec_weights).resolve())
            config = dataclasses.replace(config, codec=dataclasses.replace(config.codec, weights=weights))
        train(config, args.out, args.band, resume=args.resume, device=args.device)
        return 0
    except (RecipeError, DataError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
