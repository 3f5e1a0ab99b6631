"""Training curves as a PNG: training and held-out loss per quarter of the time range, and the held-out
log-mel L1 of the model's own output. Needs matplotlib (the `train` extra); without it nothing is drawn."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path
from .logs import read_csv


def plot_curves(train_csv: Path, valid_csv: Path, out: Path, title: str, quality: str = "mel_l1") -> bool:
    """Draw `out` from the two logs; returns False (and draws nothing) when matplotlib is missing.

    Args:
        quality: the `valid.csv` column drawn on the right: "mel_l1" (spectral models: the full output) or
            "mel" (U-Net bands: the band's output against the true band).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train, valid = read_csv(train_csv), read_csv(valid_csv)
    fig, (ax_loss, ax_mel) = plt.subplots(1, 2, figsize=(11, 4))
    for q in range(4):
        key = f"loss_q{q}"
        points = [(int(r["step"]), float(r[key])) for r in train if r.get(key)]
        if points:
            ax_loss.plot(*zip(*points), label=f"train, quarter {q} of the time range", alpha=0.6)
        points = [(int(r["step"]), float(r[f"valid_{key}"])) for r in valid if r.get(f"valid_{key}")]
        if points:
            ax_loss.plot(*zip(*points), "o--", label=f"held-out, centre of quarter {q}")
    ax_loss.set(xlabel="step", ylabel="MSE", yscale="log", title=f"{title}: loss per time quarter")
    ax_loss.legend(fontsize=7)
    points = [(int(r["step"]), float(r[quality])) for r in valid if r.get(quality)]
    if points:
        ax_mel.plot(*zip(*points), "o-")
    ax_mel.set(xlabel="step", ylabel="log-mel L1", title="held-out: model's own output (no re-EQ)")
    fig.tight_layout()
    try:
        with atomic_path(out, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)
    return True
