"""mbd.hub and mbd.fetch against a fake Hugging Face Hub on 127.0.0.1 (huggingface_hub's own client talks to it).

The fake hub answers `HEAD`/`GET {endpoint}/{repo}/resolve/{revision}/{file}` with the headers hf_hub_download
reads (X-Repo-Commit, ETag = the sha256 of the true bytes, as the real hub gives for LFS files,
Content-Length), honours `Range`, and serves plain `GET /{file}` for torch.hub. Per-file modes make it
misbehave: `corrupt` (wrong bytes once or always), `stall` (send part, then one byte now and then), `slow`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants

from mbd import checkpoint, hub
from mbd.codec import bandwidth_to_n_q
from tests.conftest import GOLDEN

REPO = "facebook/multiband-diffusion"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[1]


class _Hub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _file(self) -> tuple[str, bytes] | None:
        path = self.path.split("?")[0]
        prefix = f"/{REPO}/resolve/main/"
        name = path[len(prefix):] if path.startswith(prefix) else path.lstrip("/")
        body = self.server.files.get(name)  # type: ignore[attr-defined]
        return None if body is None else (name, body)

    def _head(self, name: str, body: bytes, start: int) -> None:
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", getattr(self.server, "commit", COMMIT))
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        found = self._file()
        if found is None:
            self.send_error(404)
            return
        self._head(*found, 0)

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        found = self._file()
        srv.gets.append(self.path)  # type: ignore[attr-defined]
        if found is None:
            self.send_error(404)
            return
        name, body = found
        ranged = self.headers.get("Range", "")
        start = int(ranged[6:].split("-")[0]) if ranged.startswith("bytes=") else 0
        self._head(name, body, start)
        mode = srv.modes.get(name)  # type: ignore[attr-defined]
        data = body[start:]
        try:
            if mode in ("corrupt", "corrupt-once"):
                if mode == "corrupt-once":
                    srv.modes.pop(name)  # type: ignore[attr-defined]
                self.wfile.write(data[:-16] + b"\0" * 16)  # right size, wrong bytes: passes hf's size check
            elif mode == "stall":  # a third at once, then one byte every 0.2 s: never a read timeout
                self.wfile.write(data[: len(data) // 3])
                self.wfile.flush()
                for i in range(len(data) // 3, len(data)):
                    if srv.stopping.wait(0.2):  # type: ignore[attr-defined]
                        return
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
            elif mode == "slow":  # about a second in all
                for i in range(0, len(data), len(data) // 10 + 1):
                    self.wfile.write(data[i : i + len(data) // 10 + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    srv.daemon_threads = True
    srv.files, srv.modes, srv.gets = {}, {}, []  # type: ignore[attr-defined]
    srv.stopping = threading.Event()  # type: ignore[attr-defined]
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.stopping.set()  # type: ignore[attr-defined]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: http.server.ThreadingHTTPServer) -> dict[str, Path]:
    """Every cache under tmp_path, the fake hub as endpoint, online, a 1 s stall window, a manifest with 'tiny'."""
    dirs = {"mbd": tmp_path / "mbd", "hf": tmp_path / "hf", "torch": tmp_path / "torch"}
    monkeypatch.setenv("MBD_CACHE", str(dirs["mbd"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["hf"]))
    monkeypatch.setenv("TORCH_HOME", str(dirs["torch"]))
    monkeypatch.setenv("HF_ENDPOINT", server.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("MBD_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        f'[model.tiny]\nfile = "mbd_comp_2.pt"\nrepo = "{REPO}"\ncodec = "encodec_24khz"\nn_q = 2\n'
        'sample_rate = 24000\nlicense = "CC-BY-NC-4.0"\nlicense_url = "https://example.invalid"\n\n'
        f'[codec.enc]\nfile = "enc-{_digest(CODEC)[:8]}.th"\nurl = "{server.url}/enc.th"\n'  # type: ignore[attr-defined]
        f'sha256_prefix = "{_digest(CODEC)[:8]}"\nlicense = "MIT"\nlicense_url = "https://example.invalid"\n'
    )
    monkeypatch.setenv("MBD_MANIFEST", str(manifest))
    monkeypatch.setattr(hub, "_noticed", {"tiny"})
    server.files["mbd_comp_2.pt"] = MODEL  # type: ignore[attr-defined]
    server.files["enc.th"] = CODEC  # type: ignore[attr-defined]
    return dirs


def _torch_zip(n: int) -> bytes:
    """A small torch checkpoint (zip format) of about `n` bytes."""
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(n // 4, dtype=torch.float32)}, buffer)
    return buffer.getvalue()


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


MODEL = _torch_zip(1_200_000)
CODEC = b"codec weights " * 50_000


def _blobs(dirs: dict[str, Path]) -> list[str]:
    folder = dirs["hf"] / "models--facebook--multiband-diffusion" / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _gets(server: http.server.ThreadingHTTPServer, name: str) -> int:
    return sum(path.endswith(name) for path in server.gets)  # type: ignore[attr-defined]


def _child(code: str, light: bool = True) -> subprocess.Popen:
    """A Python process running `code` with this test's environment (and this source tree first).

    `light`: `mbd` is a bare namespace (its `__init__`, which imports torch, is skipped), so `from mbd import hub`
    starts in a fraction of a second.
    """
    if light:
        code = (f"import sys, types; pkg = types.ModuleType('mbd'); pkg.__path__ = [{str(ROOT / 'mbd')!r}]; "
                f"sys.modules['mbd'] = pkg\n{code}")
    child_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=child_env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(dirs: dict[str, Path], child: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(name.endswith(".incomplete") for name in _blobs(dirs)):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)


# --- models through huggingface_hub -------------------------------------------------------------------------


def test_model_fetched_once_into_the_hf_cache_with_umask_permissions(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer
) -> None:
    old = os.umask(0o027)
    try:
        path = hub.resolve_model("tiny")
    finally:
        os.umask(old)
    assert path.read_bytes() == MODEL and path.is_relative_to(env["hf"])
    assert _blobs(env) == [_digest(MODEL)]  # one copy, named by the hub's ETag: nothing converted, no partial
    assert (path.resolve().stat().st_mode & 0o777) == 0o640
    lock = env["mbd"] / ".locks" / "tiny.lock"
    assert (lock.stat().st_mode & 0o777) == 0o640
    assert hub.resolve_model("tiny") == path and _gets(server, "mbd_comp_2.pt") == 1
    assert hub.model_entry("tiny").is_cached
    assert hub.model_entry("tiny").url == f"{server.url}/{REPO}/resolve/main/mbd_comp_2.pt"  # type: ignore[attr-defined]


def test_stalled_transfer_times_out_in_one_line(env: dict[str, Path], server: http.server.ThreadingHTTPServer) -> None:
    server.modes["mbd_comp_2.pt"] = "stall"  # type: ignore[attr-defined]
    start = time.monotonic()
    with pytest.raises(hub.DownloadError, match="stalled.*HF_HUB_DOWNLOAD_TIMEOUT") as info:
        hub.resolve_model("tiny")
    assert time.monotonic() - start < 6.0
    assert "\n" not in str(info.value) and not isinstance(info.value, hub.OfflineError)
    assert _blobs(env) == []  # the partial file is gone
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_corrupt_download_is_fetched_again(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.modes["mbd_comp_2.pt"] = "corrupt-once"  # type: ignore[attr-defined]
    assert hub.resolve_model("tiny").read_bytes() == MODEL
    assert "downloaded mbd_comp_2.pt is damaged" in capsys.readouterr().err
    assert _gets(server, "mbd_comp_2.pt") == 2 and _blobs(env) == [_digest(MODEL)]


def test_always_corrupt_download_keeps_nothing(env: dict[str, Path], server: http.server.ThreadingHTTPServer) -> None:
    server.modes["mbd_comp_2.pt"] = "corrupt"  # type: ignore[attr-defined]
    with pytest.raises(hub.DownloadError, match="damaged twice.*sha256"):
        hub.resolve_model("tiny")
    assert _blobs(env) == [] and not hub.model_entry("tiny").is_cached


def test_new_revision_on_the_hub_is_checked_too(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.resolve_model("tiny")
    newer = _torch_zip(400_000)
    server.files["mbd_comp_2.pt"], server.commit = newer, "f" * 40  # type: ignore[attr-defined]
    server.modes["mbd_comp_2.pt"] = "corrupt-once"  # type: ignore[attr-defined]
    assert hub.resolve_model("tiny").read_bytes() == newer
    assert "downloaded mbd_comp_2.pt is damaged" in capsys.readouterr().err


def test_manifest_size_is_checked(env: dict[str, Path], server: http.server.ThreadingHTTPServer) -> None:
    manifest = Path(os.environ["MBD_MANIFEST"])
    manifest.write_text(manifest.read_text().replace("n_q = 2\n", f"n_q = 2\nsize = {len(MODEL) + 1}\n", 1))
    with pytest.raises(hub.DownloadError, match="damaged twice.*the manifest says"):
        hub.resolve_model("tiny")
    assert _blobs(env) == []


def test_damaged_cached_file_is_replaced(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blob = hub.resolve_model("tiny").resolve()
    blob.write_bytes(MODEL[: len(MODEL) // 2])  # truncated on disk after a good download
    monkeypatch.setenv("MBD_OFFLINE", "1")
    with pytest.raises(hub.OfflineError, match=f"damaged.*delete {blob}"):
        hub.resolve_model("tiny")
    monkeypatch.delenv("MBD_OFFLINE")
    assert hub.resolve_model("tiny").read_bytes() == MODEL
    assert "cached mbd_comp_2.pt is damaged (it is not a readable zip file" in capsys.readouterr().err
    assert checkpoint.zipfile.is_zipfile(blob)


def test_partial_file_of_a_killed_process_is_removed(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer
) -> None:
    server.modes["mbd_comp_2.pt"] = "stall"  # type: ignore[attr-defined]
    child = _child("from mbd import hub; hub.resolve_model('tiny')")
    _wait_for_partial(env, child)
    child.kill()  # SIGKILL: no cleanup can run
    child.communicate()
    assert any(name.endswith(".incomplete") for name in _blobs(env))
    server.modes.clear()  # type: ignore[attr-defined]
    assert hub.resolve_model("tiny").read_bytes() == MODEL
    assert _blobs(env) == [_digest(MODEL)]


def test_sigterm_stops_a_fetch_like_ctrl_c(env: dict[str, Path], server: http.server.ThreadingHTTPServer) -> None:
    server.modes["mbd_comp_2.pt"] = "stall"  # type: ignore[attr-defined]
    child = _child("from mbd import hub\ntry:\n    hub.resolve_model('tiny')\n"
                   "except KeyboardInterrupt as err:\n    print(type(err).__name__, err)\n    raise SystemExit(130)")
    _wait_for_partial(env, child)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130 and "Traceback" not in err, err
    assert out.startswith("Interrupted fetching mbd_comp_2.pt stopped by SIGTERM")
    assert _blobs(env) == []  # the partial file was removed on the way out


@pytest.mark.slow  # the command line imports torch in the child: seconds on a busy machine
def test_sigterm_in_the_command_line(env: dict[str, Path], server: http.server.ThreadingHTTPServer,
                                     tmp_path: Path) -> None:
    server.modes["mbd_comp_2.pt"] = "stall"  # type: ignore[attr-defined]
    np.save(tmp_path / "codes.npy", np.zeros((2, 10), dtype=np.int64))
    child = _child(f"import sys; from mbd.cli import main; sys.exit(main(['decode', {str(tmp_path / 'codes.npy')!r}, "
                   f"'-o', {str(tmp_path / 'out')!r}, '--model', 'tiny']))", light=False)
    _wait_for_partial(env, child)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "mbd: interrupted"
    assert _blobs(env) == []


def test_two_processes_fetch_one_model(env: dict[str, Path], server: http.server.ThreadingHTTPServer) -> None:
    server.modes["mbd_comp_2.pt"] = "slow"  # type: ignore[attr-defined]
    code = "from mbd import hub; p = hub.resolve_model('tiny'); print(p); assert p.read_bytes()"
    children = [_child(code) for _ in range(2)]
    outs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and Path(outs[0][0].strip()).read_bytes() == MODEL
    assert _gets(server, "mbd_comp_2.pt") == 1 and _blobs(env) == [_digest(MODEL)]


def test_offline_message_and_hand_placed_file(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MBD_OFFLINE", "1")
    with pytest.raises(hub.OfflineError, match="offline mode") as info:
        hub.resolve_model("tiny")
    message = str(info.value)
    assert f"{REPO}/resolve/main/mbd_comp_2.pt" in message and str(env["mbd"] / "mbd_comp_2.pt") in message
    assert server.gets == []  # type: ignore[attr-defined]
    env["mbd"].mkdir(parents=True, exist_ok=True)
    (env["mbd"] / "mbd_comp_2.pt").write_bytes(b"by hand")  # what the message asks for
    assert hub.resolve_model("tiny") == env["mbd"] / "mbd_comp_2.pt"


def test_http_error_is_not_an_offline_error(env: dict[str, Path], server: http.server.ThreadingHTTPServer) -> None:
    server.files.clear()  # type: ignore[attr-defined]
    with pytest.raises(hub.DownloadError, match="HTTP 404") as info:
        hub.resolve_model("tiny")
    assert not isinstance(info.value, hub.OfflineError) and _blobs(env) == []


@pytest.mark.slow  # huggingface_hub retries an unreachable hub with backoff for about 20 s
def test_unreachable_hub_gives_offline_message(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed on exit: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(hub.OfflineError, match="cannot be reached"):
        hub.resolve_model("tiny")
    assert _blobs(env) == []


def test_golden_checkpoint_loads_from_the_hf_cache(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer
) -> None:
    server.files["mbd_comp_2.pt"] = (GOLDEN / "mbd_comp_2_reduced.pt").read_bytes()  # type: ignore[attr-defined]
    config, tensors = checkpoint.load(hub.resolve_model("tiny"))
    assert config["codec"]["n_q"] == 2 and len(tensors) > 0


# --- EnCodec weights through torch.hub -----------------------------------------------------------------------


def test_codec_weights_fetched_by_torch_hub(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = env["torch"] / "hub" / "checkpoints"
    name = f"enc-{_digest(CODEC)[:8]}.th"
    folder.mkdir(parents=True)
    (folder / f"{name}.0123abcd.partial").write_bytes(b"left by a killed process")
    old = os.umask(0o027)
    try:
        path = hub.resolve_codec_weights("enc")
    finally:
        os.umask(old)
    assert path == folder / name and path.read_bytes() == CODEC
    assert sorted(p.name for p in folder.iterdir()) == [name] and (path.stat().st_mode & 0o777) == 0o640
    assert hub.resolve_codec_weights("enc") == path and _gets(server, "enc.th") == 1
    path.write_bytes(b"tampered")
    assert hub.resolve_codec_weights("enc").read_bytes() == CODEC
    assert f"cached {name} is damaged" in capsys.readouterr().err


def test_codec_weights_stall_and_bad_hash(env: dict[str, Path], server: http.server.ThreadingHTTPServer) -> None:
    server.modes["enc.th"] = "stall"  # type: ignore[attr-defined]
    start = time.monotonic()
    with pytest.raises(hub.DownloadError, match="stalled"):
        hub.resolve_codec_weights("enc")
    assert time.monotonic() - start < 6.0
    server.modes["enc.th"] = "corrupt"  # type: ignore[attr-defined]
    with pytest.raises(hub.DownloadError, match="hash"):
        hub.resolve_codec_weights("enc")
    assert list((env["torch"] / "hub" / "checkpoints").iterdir()) == []


# --- names, manifest, folders ---------------------------------------------------------------------------------


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MBD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "mbd"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "mbd"
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"


def test_packaged_manifest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MBD_MANIFEST", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "mbd"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
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
    codec = hub.codec_entry("encodec_24khz")  # the URL `encodec`'s own loader uses
    assert codec.url == f"https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-{codec.sha256_prefix}.th"
    assert hub.codec_entry("encodec_32khz").hf_repo == "facebook/encodec_32khz"
    (tmp_path / "mbd").mkdir()
    (tmp_path / "mbd" / "encodec24k-3kbps.safetensors").write_bytes(b"")  # placed by hand
    assert [entry.is_cached for entry in hub.list_models() if not entry.bundled] == [False, True, False, False]


def test_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MBD_MANIFEST", raising=False)
    with pytest.raises(ValueError, match="neither an existing file nor a known model.*encodec24k-3kbps"):
        hub.resolve_model("encodec24k-5kbps")
    with pytest.raises(ValueError, match="unknown codec 'dac'.*encodec_24khz"):
        hub.resolve_codec_weights("dac")


def test_local_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "mbd"))
    local = tmp_path / "encodec24k-3kbps"  # even when it is spelled like a model name
    local.write_bytes(b"weights")
    assert hub.resolve_model(local) == local
    assert not (tmp_path / "mbd").exists()


def test_bad_manifest_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.toml").write_text('[model.x]\nfile = "x.pt"\nsample_rate = 1\nlicense = "x"\nlicense_url = "x"\n')
    monkeypatch.setenv("MBD_MANIFEST", str(tmp_path / "m.toml"))
    with pytest.raises(ValueError, match=r"bad \[model.\"x\"\] entry.*'repo'"):
        hub.list_models()


def test_non_commercial_licence_is_a_warning_once_per_model(
    env: dict[str, Path], server: http.server.ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "_noticed", set())
    with pytest.warns(hub.LicenceNotice, match="'tiny' weights are licensed CC-BY-NC-4.0"):
        hub.resolve_model("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hub.resolve_model("tiny")  # noticed once
