"""The training loop of one band model (AudioCraft's `DiffusionSolver`, audiocraft/solvers/diffusion.py): a
plain PyTorch loop, torchrun-ready.

Per step, for band b of n (`alpha_bar` and noise as in DDPM, Ho et al., 2020, Algorithm 1):
1. draw the global batch of crops, steps t ~ U{0..N-1} per example and eps ~ N(0, I) from a generator
   seeded by `(seed, band, step)`; each process takes its contiguous slice of the global batch;
2. x = split_bands(clip, sr, n)[b]: the target is the band-passed clip;
3. while the processor is fitting (its first `num_samples` examples), update its statistics on the whole
   global batch, then x = processor.project(x);
4. noisy = q(x_t | x_0) = `mbd.diffusion.add_noise(x, t, eps, schedule)`;
5. loss = mean over examples of mean_{C,T} (model(noisy, t, latent(clip)) - eps)^2;
   with `objective = "flow"` instead noisy = (1 - s) eps + s x with flow time s = 1 - t / (N - 1), and the
   target is the velocity x - eps (Lipman et al., 2023; `mbd.flow`);
6. Adam step (optionally clipped), then EMA update of the weights (decay 0.99).

With P processes each computes the loss on B/P examples and DDP averages the gradients, which equals the
single-process gradient of the same global batch up to float rounding.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .. import flow
from ..bands import band_splitter
from ..codec import Codec, load_codec
from ..diffusion import add_noise
from ..processor import BandProcessor
from ..unet import DiffusionUNet
from . import evaluate, state
from .conditioning import Conditioner, MelConditioner
from .config import RecipeError, TrainConfig
from .data import CropSampler, scan, split_files, validation_clips
from .logs import Board, CsvLog, Progress
from .plots import plot_curves

TRAIN_COLUMNS = ["step", "loss", "loss_q0", "loss_q1", "loss_q2", "loss_q3", "steps_per_s", "examples_per_s"]
VALID_COLUMNS = ["step", "mel", "stft", "si_sdr", "valid_loss_q0", "valid_loss_q1", "valid_loss_q2", "valid_loss_q3"]


@dataclass
class TrainResult:
    """Outcome of one band's run: final step, per-step global losses of this run, and written files."""

    band: int
    step: int
    losses: list[float]
    model_path: Path
    state_path: Path


def step_generator(seed: int, band: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator for every random draw of one training step (so a resume needs no RNG state)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + band) * 1_000_003 + step)


@dataclass(frozen=True)
class Distributed:
    rank: int
    world: int
    device: torch.device


def setup_distributed(device: str | None) -> Distributed:
    """Join the torchrun process group when `WORLD_SIZE` > 1: NCCL for CUDA tensors, gloo for CPU ones (the
    loss statistics and the stop decision are small CPU tensors, on a GPU run too)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return Distributed(rank, world, dev)


def check_lengths(config: TrainConfig, hop: int) -> None:
    """The U-Net accepts at most 2 latent frames per bottleneck frame: refuse too-short crops up front."""
    u = config.unet
    for what, seconds in [
        ("segment_duration", config.data.segment_duration),
        ("valid_duration", config.data.valid_duration),
    ]:
        length = round(seconds * config.data.sample_rate)
        if -(-length // hop) > u.max_condition_frames(length):
            raise RecipeError(f"data.{what} = {seconds} s is too short for this U-Net's bottleneck; use longer clips")


def _recipe_mismatch(stored: dict, current: dict) -> list[str]:
    """Recipe keys that differ between a stored state and the current recipe (steps and logging may change)."""
    current = json.loads(json.dumps(current))
    stored = {"conditioner": "codec", "mel": current.get("mel"), **stored}  # states from before mel conditioning
    diffs = []
    for key, value in current.items():
        if key in ("log", "out_dir"):
            continue
        if isinstance(value, dict):
            diffs += [
                f"{key}.{k}" for k, v in value.items() if key + "." + k != "optim.steps" and v != stored[key].get(k)
            ]
        elif value != stored.get(key):
            diffs.append(key)
    return diffs


def train_band(
    config: TrainConfig,
    band: int,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | None = None,
    codec: Codec | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train (or resume) the model of band `band`; writes into `out_dir/band{band}/`.

    Args:
        config: the recipe.
        band: band index, one of the recipe's `[[band]]` entries.
        out_dir: run folder.
        resume: continue from `state.safetensors` when it exists.
        device: torch device; default CUDA (the local rank's) when available, else CPU.
        codec: an already built codec; default `load_codec(config.codec...)` (unused with `conditioner = "mel"`).
        started: `time.perf_counter()` at the start of the run, from which `log.max_seconds` counts; default now.
    """
    started = time.perf_counter() if started is None else started
    config.band_config(band)  # unknown band: fail early
    env = setup_distributed(device)
    rank0 = env.rank == 0
    folder = Path(out_dir) / f"band{band}"
    state_path, model_path = folder / "state.safetensors", folder / f"band{band}.safetensors"
    if state_path.exists() and not resume:
        raise RecipeError(f"{state_path} exists: pass --resume to continue it, or choose another --out")
    B, world = config.optim.batch_size, env.world
    if B % world:
        raise RecipeError(f"optim.batch_size {B} must be divisible by the number of processes {world}")
    local = B // world

    # --- data and codec (all checks before any training) ---------------------------------------------
    sr, length = config.data.sample_rate, round(config.data.segment_duration * config.data.sample_rate)
    files, skipped = scan(config.data.paths)
    valid_files = None
    if config.data.valid_paths:
        valid_files, skipped_valid = scan(config.data.valid_paths)
        skipped += skipped_valid
    train_files, valid_files = split_files(files, valid_files, config.data.valid_clips, config.seed)
    if rank0:
        hours = sum(f.frames / f.sample_rate for f in train_files) / 3600
        print(
            f"band {band}: {len(train_files)} training files ({hours:.2f} h), {len(valid_files)} validation "
            f"clips, {skipped} unreadable files skipped"
        )
    conditioner: Conditioner | MelConditioner
    if config.conditioner == "mel":
        check_lengths(config, config.mel.hop_length)
        conditioner = MelConditioner(config.mel, sr)
    else:
        if codec is None:
            codec = load_codec(config.codec.name, config.codec.n_q, config.codec.weights)
        if int(codec.n_q) != config.codec.n_q:
            raise RecipeError(f"codec.n_q = {config.codec.n_q} but the codec uses {codec.n_q} codebooks")
        check_lengths(config, int(codec.hop_length))
        codec = codec.to(env.device) if isinstance(codec, torch.nn.Module) else codec
        tag = f"{config.codec.name}|{config.codec.n_q}|{config.codec.weights}"
        conditioner = Conditioner(codec, config.codec.cache_dir, sr, length, tag)
    conditioner.device = env.device
    sampler = CropSampler(train_files, sr, length, conditioner.align)

    # --- model, EMA, processor, optimiser ------------------------------------------------------------
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed * 1_000_003 + band)
        model = DiffusionUNet(config.unet)
    model = model.to(env.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    proc_cfg = config.processor_config(band)
    processor = None if proc_cfg is None else BandProcessor(proc_cfg, sr).to(env.device)
    splitter = band_splitter(sr, config.n_bands).to(env.device)
    o = config.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    step = 0
    if resume and state_path.exists():
        meta, tensors = state.load_state(state_path)
        diffs = _recipe_mismatch(meta["recipe"], config.to_dict())
        if diffs or meta["band"] != band:
            raise RecipeError(f"{state_path} was trained with a different recipe or band (differs: {diffs})")
        step = state.restore(meta, tensors, model, ema, processor, optimizer)  # also the global RNG
    else:
        if resume and rank0:
            warnings.warn(f"--resume: no {state_path} yet, starting band {band} from scratch", stacklevel=2)
        torch.manual_seed(config.seed * 1_000_003 + band)  # the global RNG (dropout, if any) is seeded too
    net = DistributedDataParallel(model) if world > 1 else model
    use_bf16 = o.precision == "bf16" or (o.precision == "auto" and env.device.type == "cuda")
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    schedule = config.schedule

    # --- validation set and logs (rank 0) ------------------------------------------------------------
    board = train_log = valid_log = None
    if rank0:
        folder.mkdir(parents=True, exist_ok=True)
        train_log, valid_log = CsvLog(folder / "train.csv", TRAIN_COLUMNS), CsvLog(folder / "valid.csv", VALID_COLUMNS)
        train_log.truncate_after(step)
        valid_log.truncate_after(step)
        board = Board(folder / "tensorboard", config.log.tensorboard)
        v_len = round(config.data.valid_duration * sr)
        v_clips = validation_clips(valid_files, sr, v_len).to(env.device) if valid_files else None
        if v_clips is not None:
            v_target = splitter(v_clips)[band]
            v_latents = conditioner.encode(v_clips)

    def validate_now() -> None:
        if rank0 and v_clips is not None:
            ema.eval()
            est = evaluate.regenerate_band(
                ema, processor, schedule, v_latents, v_len, config.log.valid_stride, config.seed, config.objective
            )
            scores = evaluate.score(est, v_target, sr)
            target = v_target if processor is None else processor.project(v_target)
            scores.update(evaluate.quarter_losses(ema, target, v_latents, schedule, config.objective, config.seed))
            valid_log.write({"step": step, **scores})
            board.scalars("valid", scores, step)
            plot_curves(folder / "train.csv", folder / "valid.csv", folder / "curves.png", f"band {band}", "mel")
        if world > 1:
            dist.barrier()

    def save_now() -> None:
        if rank0:
            state.save_state(state_path, config, band, step, model, ema, processor, optimizer)
            state.export_band(model_path, config, band, ema, processor, step)
        if world > 1:
            dist.barrier()

    # --- the loop ------------------------------------------------------------------------------------
    progress = Progress(o.steps, step, config.log.progress and rank0, f"band {band}")
    losses: list[float] = []
    window = torch.zeros(2, 4, dtype=torch.float64)  # [sum, count] per quarter of the t range
    tic, tic_step = time.perf_counter(), step
    mine = slice(env.rank * local, (env.rank + 1) * local)
    while step < o.steps:
        g = step_generator(config.seed, band, step)
        crops = sampler.draw(B, g)  # the global batch, identical on every process
        t = torch.randint(0, schedule.num_steps, (B,), generator=g)
        eps = torch.randn(B, 1, length, generator=g)
        wav = sampler.load(crops[mine]).to(env.device)  # [b, 1, L]
        with torch.no_grad():
            x = splitter(wav)[band]  # (2) [b, 1, L]
            if processor is not None:
                if not processor.fitted:  # (3) fit on the whole global batch, in order
                    everything = _gather(x, world)
                    processor.update(everything, generator=step_generator(config.seed, band, step, env.device))
                x = processor.project(x)
            latent = conditioner(wav, crops[mine], sampler.files)
            t_mine, eps_mine = t[mine].to(env.device), eps[mine].to(env.device)
            if config.objective == "flow":  # (4') step k is flow time 1 - k / (N - 1); target u = x_1 - x_0
                noisy, target = flow.add_noise(x, eps_mine, 1 - t_mine.float() / (schedule.num_steps - 1))
            else:
                noisy, target = add_noise(x, t_mine, eps_mine, schedule), eps_mine  # (4)
        with autocast:
            pred = net(noisy, t_mine, latent)
        per_example = (pred.float() - target).pow(2).mean(dim=(1, 2))  # (5) [b]
        loss = per_example.mean()
        for group in optimizer.param_groups:
            group["lr"] = o.lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.max_norm)
        optimizer.step()
        with torch.no_grad():  # (6)
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - o.ema_decay)
            for e, b in zip(ema.buffers(), model.buffers()):
                e.copy_(b)
        stats = torch.zeros(2, 4, dtype=torch.float64)
        quarter = (t_mine * 4 // schedule.num_steps).cpu()
        stats[0].index_add_(0, quarter, per_example.detach().double().cpu())
        stats[1].index_add_(0, quarter, torch.ones(local, dtype=torch.float64))
        if world > 1:
            dist.all_reduce(stats)
        window += stats
        losses.append(stats[0].sum().item() / B)
        step += 1

        if step % config.log.log_every == 0 or step == o.steps:
            elapsed = time.perf_counter() - tic
            speed = (step - tic_step) / max(elapsed, 1e-9)
            row = {"step": step, "loss": window[0].sum().item() / window[1].sum().item()}
            row.update(
                {f"loss_q{q}": (window[0, q] / window[1, q]).item() if window[1, q] else math.nan for q in range(4)}
            )
            row.update({"steps_per_s": speed, "examples_per_s": speed * B})
            if rank0:
                train_log.write(row)
                board.scalars("train", {k: v for k, v in row.items() if k != "step"}, step)
            progress.update(step - tic_step, {"loss": row["loss"], "it/s": speed})
            window.zero_()
            tic, tic_step = time.perf_counter(), step
        out_of_time = _out_of_time(started, config.log.max_seconds, world)
        if step % config.log.checkpoint_every == 0 or step == o.steps or out_of_time:
            save_now()
        if (config.log.valid_every and step % config.log.valid_every == 0) or step == o.steps or out_of_time:
            validate_now()
        if out_of_time:
            if rank0:
                print(f"band {band}: stopped at step {step}: log.max_seconds = {config.log.max_seconds} reached")
            break
    progress.close()
    if board is not None:
        board.close()
    return TrainResult(band, step, losses, model_path, state_path)


def _out_of_time(started: float, max_seconds: float | None, world: int) -> bool:
    """Whether `max_seconds` (None: no limit) have passed since `started`; every process takes rank 0's answer."""
    if max_seconds is None:
        return False
    late = torch.tensor([time.perf_counter() - started > max_seconds])
    if world > 1:
        dist.broadcast(late, 0)
    return bool(late.item())


def _gather(x: torch.Tensor, world: int) -> torch.Tensor:
    """Concatenate every process's slice `[b, ...]` in rank order: the global batch `[B, ...]`."""
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    bands: list[int] | None = None,
    *,
    resume: bool = False,
    device: str | None = None,
) -> list[TrainResult]:
    """Train the given bands (default: every `[[band]]` of the recipe), one after the other.

    When every band 0..n_bands-1 has a model file afterwards, they are assembled into
    `out_dir/model.safetensors`.
    """
    out = Path(config.out_dir if out_dir is None else out_dir)
    bands = [b.index for b in config.band] if bands is None else bands
    for b in bands:
        config.band_config(b)  # unknown band: fail before training anything
    started, results = time.perf_counter(), []
    for b in bands:
        results.append(train_band(config, b, out, resume=resume, device=device, started=started))
        if results[-1].step < config.optim.steps:  # stopped by log.max_seconds: the next bands wait for --resume
            break
    paths = [out / f"band{b}" / f"band{b}.safetensors" for b in range(config.n_bands)]
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0 and all(p.is_file() for p in paths):
        state.assemble(paths, out / "model.safetensors")
        print(f"assembled {len(paths)} bands into {out / 'model.safetensors'}")
    return results
