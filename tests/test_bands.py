"""Band splitting in segments reproduces the whole-signal split."""

from __future__ import annotations

import pytest
import torch

from mbd.bands import split_bands, split_bands_in_segments


@pytest.mark.parametrize("n_bands, segment", [(1, 100), (8, 13), (8, 999), (32, 2000), (32, 10**6)])
def test_segments_equal_whole_split(n_bands: int, segment: int) -> None:
    x = torch.randn(2, 1, 3001, generator=torch.Generator().manual_seed(0))
    pieces = list(split_bands_in_segments(x, 24000, n_bands, segment))
    assert [start for start, _ in pieces] == list(range(0, 3001, segment))
    got = torch.cat([bands for _, bands in pieces], dim=-1)
    torch.testing.assert_close(got, split_bands(x, 24000, n_bands), atol=1e-5, rtol=0)


def test_segment_must_be_positive() -> None:
    with pytest.raises(ValueError, match="segment"):
        next(split_bands_in_segments(torch.zeros(1, 10), 24000, 4, 0))
