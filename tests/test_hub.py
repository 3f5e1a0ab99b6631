"""mbd.hub: manifest, cache, checked atomic downloads and offline messages, against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from mbd import checkpoint, hub
from mbd.codec import bandwidth_to_n_q
from tests.conftest import GOLDEN


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /<name> serves `server.files[name]`; names starting with `truncated` promise 100 bytes too many."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = self.server.files.get(self.path.lstrip("/"))  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        extra = 100 if self.path.startswith("/truncated") else 0
        self.send_header("Content-Length", str(len(body) + extra))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {}  # type: ignore[attr-defined]
    srv.requests = []  # type: ignore[attr-defined]
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MBD_OFFLINE", raising=False)
    return tmp_path / "cache"


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on exit: nothing listens there


def _write_manifest(path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path.write_text(text)
    monkeypatch.setenv("MBD_MANIFEST", str(path))


def _model_table(name: str, file: str, url: str, extra: str = "") -> str:
    return (
        f'[model."{name}"]\nfile = "{file}"\nurl = "{url}"\ncodec = "encodec_24khz"\nn_q = 2\n'
        f'sample_rate = 24000\nlicense = "CC-BY-NC-4.0"\n'
        f'license_url = "https://creativecommons.org/licenses/by-nc/4.0/"\n{extra}\n'
    )


# --- download ------------------------------------------------------------------------------------------


def test_download_checks_and_places_the_file(server: http.server.ThreadingHTTPServer, cache: Path) -> None:
    body = bytes(range(256)) * 1000
    server.files["w.bin"] = body
    digest = hashlib.sha256(body).hexdigest()
    dest = hub.download(f"{server.url}/w.bin", cache / "w.bin", sha256=digest, size=len(body), progress=False)
    assert dest == cache / "w.bin" and dest.read_bytes() == body
    hub.download(f"{server.url}/w.bin", cache / "v.bin", sha256_prefix=digest[:8], progress=True)
    assert _listing(cache) == ["v.bin", "w.bin"]


def test_progress_without_tqdm(
    server: http.server.ThreadingHTTPServer,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    server.files["w.bin"] = b"y" * 3_000_000
    hub.download(f"{server.url}/w.bin", cache / "w.bin", progress=True)
    assert "w.bin: 3.0 / 3.0 MB" in capsys.readouterr().err
    assert (cache / "w.bin").stat().st_size == 3_000_000


@pytest.mark.parametrize(
    ("name", "checks", "match"),
    [
        ("w.bin", {"sha256": "0" * 64}, "sha256 mismatch"),
        ("w.bin", {"sha256_prefix": "00000000"}, "sha256 mismatch"),
        ("w.bin", {"size": 5}, "the manifest expects 5"),
        ("truncated.bin", {}, "truncated|broke off"),
        ("absent.bin", {}, "HTTP 404"),
    ],
)
def test_failed_download_leaves_nothing(
    server: http.server.ThreadingHTTPServer, cache: Path, name: str, checks: dict, match: str
) -> None:
    server.files["w.bin"] = server.files["truncated.bin"] = b"x" * 5000
    url = f"{server.url}/{name}"
    dest = cache / "w.bin"
    with pytest.raises(hub.DownloadError, match=match) as info:
        hub.download(url, dest, progress=False, **checks)
    assert not isinstance(info.value, hub.OfflineError)
    assert url in str(info.value) and str(dest) in str(info.value)
    assert _listing(cache) == []


def test_server_down_gives_offline_message(cache: Path) -> None:
    url = f"http://127.0.0.1:{_refused_port()}/w.bin"
    with pytest.raises(hub.OfflineError, match="cannot be reached") as info:
        hub.download(url, cache / "w.bin", progress=False)
    message = str(info.value)
    assert "w.bin is missing" in message and url in message and str(cache / "w.bin") in message
    assert _listing(cache) == []


def test_offline_env_makes_no_request(
    server: http.server.ThreadingHTTPServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["w.bin"] = b"data"
    monkeypatch.setenv("MBD_OFFLINE", "1")
    with pytest.raises(hub.OfflineError, match="MBD_OFFLINE") as info:
        hub.download(f"{server.url}/w.bin", cache / "w.bin", progress=False)
    assert f"{server.url}/w.bin" in str(info.value) and str(cache / "w.bin") in str(info.value)
    assert server.requests == [] and _listing(cache) == []


# --- names, manifest, cache ------------------------------------------------------------------------------


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MBD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "mbd"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "mbd"
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"


def test_packaged_manifest(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.delenv("MBD_MANIFEST", raising=False)
    models = {entry.name: entry for entry in hub.list_models() if not entry.bundled}  # mel24k: tests/test_mel.py
    assert set(models) == {"encodec24k-1.5kbps", "encodec24k-3kbps", "encodec24k-6kbps", "musicgen32k"}
    for bw in ("1.5", "3", "6"):
        entry = models[f"encodec24k-{bw}kbps"]
        assert entry.n_q == bandwidth_to_n_q(float(bw)) and entry.codec == "encodec_24khz"
        assert entry.file == f"mbd_comp_{entry.n_q}.pt" and entry.sample_rate == 24000
    assert (models["musicgen32k"].codec, models["musicgen32k"].n_q) == ("encodec_32khz", 4)
    for entry in models.values():
        assert entry.url == f"https://huggingface.co/facebook/multiband-diffusion/resolve/main/{entry.file}"
        assert entry.license == "CC-BY-NC-4.0" and not entry.is_cached
    codec = hub.codec_entry("encodec_24khz")
    assert codec.url is not None and codec.url.endswith(f"encodec_24khz-{codec.sha256_prefix}.th")
    assert hub.codec_entry("encodec_32khz").hf_repo == "facebook/encodec_32khz"
    cache.mkdir()
    (cache / "encodec24k-3kbps.safetensors").write_bytes(b"")
    assert [entry.is_cached for entry in hub.list_models() if not entry.bundled] == [False, True, False, False]


def test_unknown_names(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MBD_MANIFEST", raising=False)
    with pytest.raises(ValueError, match="neither an existing file nor a known model.*encodec24k-3kbps"):
        hub.resolve_model("encodec24k-5kbps")
    with pytest.raises(ValueError, match="unknown codec 'dac'.*encodec_24khz"):
        hub.resolve_codec_weights("dac")


def test_local_path_wins(tmp_path: Path, cache: Path) -> None:
    local = tmp_path / "encodec24k-3kbps"  # even when it is spelled like a model name
    local.write_bytes(b"weights")
    assert hub.resolve_model(local) == local
    assert _listing(cache) == []


def test_bad_manifest_entry(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_manifest(tmp_path / "m.toml", monkeypatch, '[model.x]\nfile = "x.pt"\n')
    with pytest.raises(ValueError, match=r"bad \[model.\"x\"\] entry"):
        hub.list_models()


# --- resolve_codec_weights / resolve_model ---------------------------------------------------------------


def test_resolve_codec_weights_downloads_once(
    server: http.server.ThreadingHTTPServer, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"codec weights" * 100
    prefix = hashlib.sha256(body).hexdigest()[:8]
    server.files["c.th"] = body
    _write_manifest(
        tmp_path / "m.toml",
        monkeypatch,
        f'[codec.enc]\nfile = "enc-{prefix}.th"\nurl = "{server.url}/c.th"\n'
        f'sha256_prefix = "{prefix}"\nlicense = "MIT"\nlicense_url = "https://example.invalid"\n',
    )
    path = hub.resolve_codec_weights("enc")
    assert path == cache / f"enc-{prefix}.th" and path.read_bytes() == body
    assert hub.resolve_codec_weights("enc") == path and server.requests == ["/c.th"]
    path.write_bytes(b"tampered")
    with pytest.raises(hub.DownloadError, match="delete it"):
        hub.resolve_codec_weights("enc")


def test_resolve_safetensors_entry_and_licence_notice(
    server: http.server.ThreadingHTTPServer,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = b"already in our format"
    server.files["m.safetensors"] = body
    digest = hashlib.sha256(body).hexdigest()
    _write_manifest(
        tmp_path / "m.toml",
        monkeypatch,
        _model_table("tiny", "m.safetensors", f"{server.url}/m.safetensors", f'sha256 = "{digest}"'),
    )
    monkeypatch.setattr(hub, "_noticed", set())
    path = hub.resolve_model("tiny")
    assert path == cache / "tiny.safetensors" and path.read_bytes() == body
    assert hub.resolve_model("tiny") == path and server.requests == ["/m.safetensors"]
    notices = [line for line in capsys.readouterr().err.splitlines() if "CC-BY-NC-4.0" in line]
    assert len(notices) == 1 and "'tiny'" in notices[0]


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, Path]]:
    """Replace `mbd.checkpoint.convert` with one that records its calls and copies src to dst."""
    calls: list[tuple[Path, Path]] = []

    def convert(src: Path, dst: Path) -> None:
        calls.append((src, dst))
        dst.write_bytes(b"converted:" + src.read_bytes())

    module = sys.modules.get("mbd.checkpoint")
    if module is None:
        try:
            import mbd.checkpoint as module
        except ImportError:
            module = types.ModuleType("mbd.checkpoint")
            monkeypatch.setitem(sys.modules, "mbd.checkpoint", module)
    monkeypatch.setattr(module, "convert", convert, raising=False)
    return calls


def test_resolve_model_downloads_converts_and_cleans_up(
    server: http.server.ThreadingHTTPServer,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_convert: list[tuple[Path, Path]],
) -> None:
    server.files["mbd_comp_2.pt"] = b"original"
    _write_manifest(
        tmp_path / "m.toml", monkeypatch, _model_table("tiny", "mbd_comp_2.pt", f"{server.url}/mbd_comp_2.pt")
    )
    path = hub.resolve_model("tiny")
    assert path == cache / "tiny.safetensors" and path.read_bytes() == b"converted:original"
    assert len(fake_convert) == 1 and fake_convert[0][0] == cache / "mbd_comp_2.pt"
    assert _listing(cache) == ["tiny.safetensors"]  # the original is gone, no temporary left
    assert hub.resolve_model("tiny") == path
    assert len(fake_convert) == 1 and server.requests == ["/mbd_comp_2.pt"]


def test_failed_conversion_keeps_the_checked_original_only(
    server: http.server.ThreadingHTTPServer,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_convert: list[tuple[Path, Path]],
) -> None:
    def broken(src: Path, dst: Path) -> None:
        dst.write_bytes(b"half")
        raise KeyError("model_state")

    monkeypatch.setattr(sys.modules["mbd.checkpoint"], "convert", broken)
    server.files["mbd_comp_2.pt"] = b"original"
    _write_manifest(
        tmp_path / "m.toml", monkeypatch, _model_table("tiny", "mbd_comp_2.pt", f"{server.url}/mbd_comp_2.pt")
    )
    with pytest.raises(KeyError):
        hub.resolve_model("tiny")
    assert _listing(cache) == ["mbd_comp_2.pt"]


def test_offline_model_message_and_hand_placed_original(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_convert: list[tuple[Path, Path]]
) -> None:
    url = "https://example.invalid/mbd_comp_2.pt"
    _write_manifest(tmp_path / "m.toml", monkeypatch, _model_table("tiny", "mbd_comp_2.pt", url))
    monkeypatch.setenv("MBD_OFFLINE", "1")
    with pytest.raises(hub.OfflineError) as info:
        hub.resolve_model("tiny")
    assert url in str(info.value) and str(cache / "mbd_comp_2.pt") in str(info.value)
    assert _listing(cache) == []
    cache.mkdir()
    (cache / "mbd_comp_2.pt").write_bytes(b"by hand")  # what the message asks for
    assert hub.resolve_model("tiny").read_bytes() == b"converted:by hand"
    assert _listing(cache) == ["tiny.safetensors"]


def test_golden_checkpoint_through_real_convert(
    server: http.server.ThreadingHTTPServer, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    golden = GOLDEN / "mbd_comp_2_reduced.pt"
    body = golden.read_bytes()
    server.files["mbd_comp_2.pt"] = body
    digest = hashlib.sha256(body).hexdigest()
    _write_manifest(
        tmp_path / "m.toml",
        monkeypatch,
        _model_table(
            "golden", "mbd_comp_2.pt", f"{server.url}/mbd_comp_2.pt", f'sha256 = "{digest}"\nsize = {len(body)}'
        ),
    )
    path = hub.resolve_model("golden")
    assert _listing(cache) == ["golden.safetensors"]
    config, tensors = checkpoint.load(path)
    assert config["codec"]["n_q"] == 2 and len(tensors) > 0
