"""The training loop of a spectral model (`mbd.spectral_mbd`): all bands at once, one shared network.

Per step s (every draw from a generator seeded by `(seed, s)`, so a resume needs no RNG state):
1. draw B crops of `segment_frames` STFT frames (files weighted by length) from the precomputed STFTs
   and log-mels of the training audio;
2. x_1 = the crops' bands in their EQ-normalised space (`SpectralBands.normalise`), `[B * n_bands, 2 * bins, T]`;
3. per row, a time t ~ U(0, 1) (flow) or a step k ~ U{0..N-1} (ddpm) and Gaussian draws x_0;
4. flow: x_t = (1 - t) x_0 + t x_1 and the target u = x_1 - x_0 (Lipman et al., 2023, eq. 22-23);
   ddpm: x_t = sqrt(alpha_bar_k) x_1 + sqrt(1 - alpha_bar_k) x_0 and the target x_0 (Ho et al., 2020, eq. 14);
5. loss = mean squared error of the network's output against the target; AdamW with linear warm-up,
   gradient clipping, then the EMA update of the weights.

Logs (in the run folder): `train.csv` (loss per quarter of the time range), `valid.csv` (held-out loss per
quarter with fixed draws, and the log-mel L1 of the model's own sampled output against the held-out mel),
`curves.png`; `state.safetensors` (exact resume) and `model.safetensors` (EMA weights, for inference).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import flow
from ..spectral_mbd import SpectralMBD
from . import state
from .data import DataError, read_clip, scan
from .logs import Board, CsvLog, Progress
from .plots import plot_curves
from .spectral_config import SpectralTrainConfig

QUARTERS = [f"loss_q{q}" for q in range(4)]
TRAIN_COLUMNS = ["step", "loss", *QUARTERS, "lr", "steps_per_s"]
VALID_COLUMNS = ["step", "valid_loss", *[f"valid_{q}" for q in QUARTERS], "mel_l1"]


@dataclass
class SpectralData:
    """Whole-clip STFTs `[F, T_i]` (complex) and log-mels `[n_mels, T_i]`, and each clip's frame count."""

    specs: list[torch.Tensor]
    mels: list[torch.Tensor]

    @property
    def frames(self) -> torch.Tensor:
        return torch.tensor([s.shape[-1] for s in self.specs], dtype=torch.float64)


def analyse(model: SpectralMBD, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio `[B, 1, L]` to its STFT without Nyquist `[B, F, T']` and its log-mel `[B, n_mels, T']`, frame-aligned
    (the log-mel is `mbd.mel`'s definition, computed from the same STFT)."""
    c = model.config.mel
    full = torch.stft(wav[:, 0].float(), c.n_fft, c.hop_length, window=model.bands.window, return_complex=True)
    mel = model.features.mel.mel_scale.fb.T @ full.abs()  # [B, n_mels, T']
    return full[:, : c.n_fft // 2], torch.log(mel.clamp(min=c.clip_val))


def load_data(model: SpectralMBD, paths: tuple[str, ...], limit: int | None, seconds: float | None) -> SpectralData:
    """Read every file (or the first `limit`, their first `seconds`) and analyse it."""
    files, _ = scan(paths)
    if not files:
        raise DataError(f"no readable audio in {list(paths)}")
    sr = model.sample_rate
    specs, mels = [], []
    for f in files[:limit]:
        length = f.length_at(sr) if seconds is None else round(seconds * sr)
        spec, mel = analyse(model, read_clip(f, 0, length, sr)[None, None])
        specs.append(spec[0])
        mels.append(mel[0])
    return SpectralData(specs, mels)


def draw_batch(
    data: SpectralData, batch: int, frames: int, floor: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """B random crops: `(spec [B, F, frames], log_mel [B, n_mels, frames])`; short clips are padded with silence."""
    index = torch.multinomial(data.frames, batch, replacement=True, generator=generator)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    specs, mels = [], []
    for i, ui in zip(index.tolist(), u.tolist()):
        spec, mel = data.specs[i], data.mels[i]
        start = int(ui * max(1, spec.shape[-1] - frames + 1))
        spec, mel = spec[:, start : start + frames], mel[:, start : start + frames]
        pad = frames - spec.shape[-1]
        specs.append(torch.nn.functional.pad(spec, (0, pad)))
        mels.append(torch.nn.functional.pad(mel, (0, pad), value=math.log(floor)))
    return torch.stack(specs), torch.stack(mels)


def training_pair(
    model: SpectralMBD, x_1: torch.Tensor, generator: torch.Generator, t: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy input, network time and regression target for clean bands `x_1` `[R, C, T]` (steps 3-4).

    Args:
        t: times in [0, 1] `[R]` (flow time, or k / N for ddpm); default drawn uniformly.

    Returns:
        `(x_t, time [R], target)`.
    """
    c = model.config
    rows = x_1.shape[0]
    if t is None:
        t = torch.rand(rows, generator=generator)
    x_0 = torch.randn(x_1.shape, generator=generator)
    if c.objective == "flow":
        x_t, target = flow.add_noise(x_1, x_0, t)
        return x_t, t, target
    num = c.diffusion.num_steps
    k = (t * num).long().clamp(max=num - 1)
    alpha_bar = c.diffusion.alpha_bars()[k].view(-1, 1, 1)  # [R, 1, 1]
    return alpha_bar.sqrt() * x_1 + (1 - alpha_bar).sqrt() * x_0, (num - 1 - k) / num, x_0


def band_rows(model: SpectralMBD, spec: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean normalised bands `[B * n, 2 * bins, T]` and their conditioning `[B * n, n_mels, T]`."""
    cond, env = model.condition(mel)
    return model.bands.normalise(spec, env).flatten(0, 1), cond


def _comparable(recipe: dict) -> dict:
    """A recipe without what a resumed run may change: the step budget, logging and the run folder."""
    recipe = json.loads(json.dumps(recipe))  # tuples as lists, as stored
    recipe["optim"].pop("steps")
    return {k: v for k, v in recipe.items() if k not in ("log", "out_dir")}


def clean_estimate_mel_loss(
    model: SpectralMBD, x_t: torch.Tensor, t: torch.Tensor, velocity: torch.Tensor, log_mel: torch.Tensor
) -> torch.Tensor:
    """L1 between the target log-mel `[B, n_mels, T]` and the log-mel of the one-step clean estimate
    x_1 ~ x_t + (1 - t) v (rows `[B * n, 2 * bins, T]`), inverted to audio with the iSTFT."""
    rows, channels, frames = x_t.shape
    x_1 = (x_t + (1 - t).view(-1, 1, 1) * velocity).view(-1, model.config.spectral.n_bands, channels, frames)
    spec = model.bands.denormalise(x_1, model.bands.envelope(log_mel))  # [B, F, T]
    wav = model.bands.istft(spec, (frames - 1) * model.hop_length)
    _, estimate = analyse(model, wav)
    return (estimate - log_mel).abs().mean()


@torch.no_grad()
def validate(
    ema: SpectralMBD, clips: SpectralData, seed: int, length: int
) -> dict[str, float]:
    """Held-out loss per quarter of the time range (fixed draws: t at each quarter's centre) and the log-mel
    L1 of the EMA model's own sampled output (default steps, no re-EQ) against the held-out log-mels."""
    g = torch.Generator().manual_seed(seed)
    spec, mel = torch.stack(clips.specs), torch.stack(clips.mels)
    x_1, cond = band_rows(ema, spec, mel)
    row: dict[str, float] = {}
    for q in range(4):
        t = torch.full((x_1.shape[0],), (q + 0.5) / 4)
        x_t, time_, target = training_pair(ema, x_1, g, t)
        pred = ema.net(x_t, time_, ema.band_ids(spec.shape[0]), cond)
        row[f"valid_loss_q{q}"] = (pred - target).pow(2).mean().item()
    row["valid_loss"] = sum(row.values()) / 4
    frames = -(-length // ema.hop_length)
    wav = ema.generate(mel[..., :frames], length, generator=torch.Generator().manual_seed(seed))
    _, have = analyse(ema, wav)
    row["mel_l1"] = (have[..., :frames] - mel[..., :frames]).abs().mean().item()
    return row


def train(config: SpectralTrainConfig, out_dir: str | Path | None = None, *, resume: bool = False) -> Path:
    """Train (or resume) a spectral model; returns the path of the EMA model file."""
    out = Path(config.out_dir if out_dir is None else out_dir)
    state_path, model_path = out / "state.safetensors", out / "model.safetensors"
    if state_path.exists() and not resume:
        raise DataError(f"{state_path} exists: pass --resume to continue it, or choose another --out")
    torch.manual_seed(config.seed)
    model = SpectralMBD(config.model_config())
    d, o, lg = config.data, config.optim, config.log
    data = load_data(model, d.paths, None, None)
    valid = load_data(model, d.valid_paths, d.valid_clips, d.valid_seconds) if d.valid_paths else None
    hours = sum(s.shape[-1] for s in data.specs) * model.hop_length / model.sample_rate / 3600
    print(f"{config.name}: {len(data.specs)} training clips ({hours:.2f} h), "
          f"{0 if valid is None else len(valid.specs)} held-out clips")
    fit_spec, fit_mel = draw_batch(data, 64, d.segment_frames, config.mel.clip_val,
                                   torch.Generator().manual_seed(config.seed))
    model.bands.fit(fit_spec, model.bands.envelope(fit_mel))
    ema = copy.deepcopy(model).requires_grad_(False)
    params = list(model.net.parameters())
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    step = 0
    if resume and state_path.exists():
        meta, tensors = state.load_state(state_path)
        if _comparable(meta["recipe"]) != _comparable(config.to_dict()):
            raise DataError(f"{state_path} was trained with a different recipe (only steps and logging may change)")
        step = state.restore(meta, tensors, model, ema, None, optimizer)
    out.mkdir(parents=True, exist_ok=True)
    train_log, valid_log = CsvLog(out / "train.csv", TRAIN_COLUMNS), CsvLog(out / "valid.csv", VALID_COLUMNS)
    train_log.truncate_after(step)
    valid_log.truncate_after(step)

    def checkpoint_now() -> None:
        state.save_state(state_path, config, 0, step, model, ema, None, optimizer)
        ema.save(model_path)

    def validate_now() -> None:
        if valid is not None:
            ema.eval()
            scores = validate(ema, valid, config.seed, round(d.valid_seconds * model.sample_rate))
            valid_log.write({"step": step, **scores})
            board.scalars("valid", scores, step)
            plot_curves(out / "train.csv", out / "valid.csv", out / "curves.png", config.name)

    board, progress = Board(out / "tensorboard", lg.tensorboard), Progress(o.steps, step, lg.progress, config.name)
    start = tic = time.perf_counter()
    tic_step, window = step, torch.zeros(2, 4, dtype=torch.float64)
    while step < o.steps:
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        spec, mel = draw_batch(data, o.batch_size, d.segment_frames, config.mel.clip_val, g)
        with torch.no_grad():
            x_1, cond = band_rows(model, spec, mel)
            x_t, t, target = training_pair(model, x_1, g)
        pred = model.net(x_t, t, model.band_ids(o.batch_size), cond)
        per_row = (pred - target).pow(2).mean(dim=(1, 2))  # [B * n]
        loss = per_row.mean()
        if config.mel_loss > 0:
            loss = loss + config.mel_loss * clean_estimate_mel_loss(model, x_t, t, pred, mel)
        lr = o.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, o.max_norm)
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema.net.parameters(), params):
                e.lerp_(p, 1 - o.ema_decay)
        quarter = (t * 4).long().clamp(max=3)
        window[0].index_add_(0, quarter, per_row.detach().double())
        window[1].index_add_(0, quarter, torch.ones_like(per_row, dtype=torch.float64))
        step += 1
        if step % lg.log_every == 0 or step == o.steps:
            speed = (step - tic_step) / max(time.perf_counter() - tic, 1e-9)
            row = {"step": step, "loss": (window[0].sum() / window[1].sum()).item(), "lr": lr, "steps_per_s": speed}
            row.update({QUARTERS[q]: (window[0, q] / window[1, q]).item() for q in range(4) if window[1, q]})
            train_log.write(row)
            board.scalars("train", {k: v for k, v in row.items() if k != "step"}, step)
            if lg.progress:
                progress.update(step - tic_step, {"loss": row["loss"], "it/s": speed})
            else:
                print(f"step {step}: loss {row['loss']:.4f}, {speed:.2f} steps/s", flush=True)
            window.zero_()
            tic, tic_step = time.perf_counter(), step
        out_of_time = lg.max_seconds is not None and time.perf_counter() - start > lg.max_seconds
        if step % lg.checkpoint_every == 0 or step == o.steps or out_of_time:
            checkpoint_now()
        if (lg.valid_every and step % lg.valid_every == 0) or step == o.steps or out_of_time:
            validate_now()
        if out_of_time:
            print(f"stopped at step {step}: log.max_seconds = {lg.max_seconds} reached", flush=True)
            break
    progress.close()
    board.close()
    return model_path
