"""Memory limits: sizes, the limit's sources in order, and a one-line refusal naming the job."""

from __future__ import annotations

import pytest

from mbd.memory import MemoryLimitError, available_bytes, check_memory, memory_limit, parse_size, unet_bytes


@pytest.mark.parametrize(
    ("text", "want"), [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("2000", 2000), ("64k", 65536)]
)
def test_parse_size(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "8X"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(MemoryLimitError, match="cannot read memory size"):
        parse_size(text)


def test_limit_sources_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBD_MAX_MEMORY", "3G")
    assert memory_limit("1G") == 2**30
    assert memory_limit() == 3 * 2**30
    monkeypatch.delenv("MBD_MAX_MEMORY")
    assert 0 < memory_limit() <= available_bytes()


def test_check_memory_names_the_job() -> None:
    check_memory(2**20, 2**30, "x.npy")
    with pytest.raises(MemoryLimitError) as err:
        check_memory(3 * 2**30, 2**30, "x.npy", "use --chunk-seconds")
    message = str(err.value)
    assert message.startswith("x.npy: needs about 3.0 GB, over the 1.0 GB") and "--chunk-seconds" in message
    assert "\n" not in message


def test_unet_estimate_scales_with_what_is_held() -> None:
    one = unet_bytes(1, 24000, 48, 4, fused=False)
    assert unet_bytes(2, 24000, 48, 4, fused=False) == 2 * one
    assert unet_bytes(1, 24000, 48, 4, fused=True) == 4 * one
