"""Released weights without --weights: the Hugging Face cache, a download, or one clear line.

Every cache here is built in tmp_path in huggingface_hub's own layout; no test reaches the
network (HF_HUB_OFFLINE=1 comes from conftest, and the tests that lift it replace every call
that could leave the machine)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import huggingface_hub.constants  # read HF_HUB_CACHE now, before any test sets it: the code must not rely on it
import pytest
import torch
from fixtures import TINY_OPEN_CLIP

from evalkit.models import ModelLoadError, build_eva_clip, hub
from evalkit.models.family import card_default_weights
from evalkit.models.hub import HubFile, Located, find_cached, hub_cache_dir, locate
from evalkit.models.open_clip_model import describe_mismatch, load_open_clip, open_clip_hub_files
from evalkit.models.zoo import CARDS, DEMO_WEIGHTS, ModelCard

REPO_ROOT = Path(__file__).resolve().parents[1]
REV = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(cache: Path, repo_id: str, filename: str, write) -> Path:
    """``write(path)`` a file into ``cache`` as huggingface_hub stores it: the content in
    blobs/, a snapshot symlink to it, refs/main naming the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / f"blob-{filename}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    write(blob)
    snap = repo / "snapshots" / REV / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    try:
        snap.symlink_to(os.path.relpath(blob, snap.parent))
    except OSError:  # no symlinks (Windows without developer mode): huggingface_hub copies too
        snap.write_bytes(blob.read_bytes())
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


# --------------------------------------------------------------------------- the cache folder


def test_cache_dir_is_read_from_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub_cache_dir() == tmp_path / "elsewhere"


def test_find_cached_follows_refs_main_to_the_snapshot(hf_cache):
    assert Path(huggingface_hub.constants.HF_HUB_CACHE) != hf_cache  # so only a call-time lookup finds it
    f = HubFile("org/repo", "w.bin")
    assert find_cached(f) is None
    snap = put_in_hub_cache(hf_cache, "org/repo", "w.bin", lambda p: p.write_bytes(b"x"))
    found = find_cached(f)
    assert found is not None and found.path == snap and found.revision == REV
    assert found.uri == f"hf://org/repo@{REV}/w.bin"


# --------------------------------------------------------------------------- EVA-CLIP cards


def tiny_eva_card() -> ModelCard:
    demo = CARDS["eva-clip-demo"]
    return ModelCard("tiny-eva-hub", "eva_clip", "test card", arch=demo.arch,
                     hub=HubFile("test-org/tiny-eva-clip", "tiny_eva_clip.pt", size=123))


def save_tiny_eva(path: Path) -> None:
    from evalkit.models import eva_config
    from evalkit.models.eva_clip import EvaClip

    torch.save(EvaClip(eva_config(CARDS["eva-clip-demo"])).init_weights(0).state_dict(), path)


def test_eva_clip_card_finds_its_weights_in_the_hf_cache_without_weights(hf_cache):
    card = tiny_eva_card()
    snap = put_in_hub_cache(hf_cache, card.hub.repo_id, card.hub.filename, save_tiny_eva)
    enc = build_eva_clip(card, None, "fp32", "cpu")
    assert enc.weights == f"hf://test-org/tiny-eva-clip@{REV}/tiny_eva_clip.pt"
    # the very file in the cache was loaded: the same digest as when it is named with --weights
    assert enc.weights_digest == build_eva_clip(card, str(snap), "fp32", "cpu").weights_digest
    assert enc.encode_text(enc.tokenize(["a red square"])).shape == (1, enc.embed_dim)


def test_eva_clip_weights_path_and_random_still_win_over_the_hub(hf_cache):
    card = tiny_eva_card()  # nothing in the cache: a hub lookup would fail
    assert build_eva_clip(card, "random", "fp32", "cpu").weights == "random"
    assert build_eva_clip(CARDS["eva-clip-demo"], None, "fp32", "cpu").weights == str(DEMO_WEIGHTS)


def assert_one_line_offline_error(e: ModelLoadError, repo: str, filename: str, cache: Path) -> None:
    msg = str(e)
    assert "\n" not in msg
    for part in (repo, filename, str(cache), "--weights", "HF_HUB_OFFLINE"):
        assert part in msg, (part, msg)


def test_offline_with_an_empty_cache_fails_at_once_in_one_line(hf_cache):
    card = CARDS["eva-clip-18b"]
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        build_eva_clip(card, None, "fp32", "cpu")
    assert time.monotonic() - t0 < 20
    assert_one_line_offline_error(err.value, "BAAI/EVA-CLIP-18B", "EVA_CLIP_18B_psz14_s6B.fp16.pt", hf_cache)
    assert "36.7 GB" in str(err.value)


# --------------------------------------------------------------------------- open_clip tags


def test_open_clip_tags_map_to_the_files_open_clip_would_fetch(monkeypatch):
    import open_clip

    files = open_clip_hub_files("ViT-B-32", "openai")
    assert [(f.repo_id, f.filename) for f in files] == [
        ("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors"),
        ("timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin"),
    ]
    for card in CARDS.values():
        if card.family == "open_clip":
            assert open_clip_hub_files(card.arch["arch"], card_default_weights(card)), card.name
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "ViT-B-32", {"x": {"hf_hub": "org/repo/model.pth"}})
    assert [f.filename for f in open_clip_hub_files("ViT-B-32", "x")] == ["model.safetensors", "model.pth"]


TAG = "evalkit_test"  # open_clip stores tags lower-case with underscores
TAG_CFG = {"hf_hub": "test-org/tiny-open-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
           "interpolation": "bilinear", "resize_mode": "squash"}


@pytest.fixture
def tiny_tag(tiny_arch, monkeypatch) -> str:
    import open_clip

    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny_arch, {TAG: dict(TAG_CFG)})

    def no_fetch(*a, **k):
        raise AssertionError("open_clip tried to fetch weights itself")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_fetch)
    return tiny_arch


def test_open_clip_tag_in_the_hf_cache_loads_with_no_network(hf_cache, tiny_tag):
    import open_clip

    sd = open_clip.create_model(tiny_tag).state_dict()
    # only the .bin: the preferred .safetensors twin is absent, as in many repositories
    snap = put_in_hub_cache(hf_cache, "test-org/tiny-open-clip", "open_clip_pytorch_model.bin",
                            lambda p: torch.save(sd, p))
    enc = load_open_clip(tiny_tag, TAG)
    assert enc.weights == f"{TAG} (hf://test-org/tiny-open-clip@{REV}/open_clip_pytorch_model.bin)"
    assert enc.pretrained == TAG  # what clip_benchmark users look for: the tag, not the cache path
    assert torch.equal(enc.model.state_dict()["visual.conv1.weight"], sd["visual.conv1.weight"])
    # the tag's preprocessing, which open_clip applies for a tag but not for a file
    image = enc.tower("image").input
    assert image.mean == (0.5, 0.5, 0.5) and image.std == (0.25, 0.25, 0.25) and image.interpolation == "bilinear"
    assert enc.model.visual.preprocess_cfg["resize_mode"] == "squash"
    by_file = load_open_clip(tiny_tag, str(snap))
    assert by_file.weights == str(snap.resolve()) and by_file.pretrained == snap.name


def test_open_clip_tag_offline_with_an_empty_cache_fails_at_once_in_one_line(hf_cache, tiny_tag):
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_open_clip(tiny_tag, TAG)
    assert time.monotonic() - t0 < 20
    assert_one_line_offline_error(err.value, "test-org/tiny-open-clip", "open_clip_model.safetensors", hf_cache)
    assert "open_clip_pytorch_model.bin" in str(err.value)


# the 18B: --max-memory tells the planner the host has room (it would stop on this machine's RAM first)
@pytest.mark.parametrize("argv", [["--model", "eva-clip-18b", "--max-memory", "200GiB"],
                                  ["--model", "open_clip:ViT-B-32", "--weights", "openai"]])
def test_cli_offline_without_weights_prints_one_line(tmp_path, argv):
    cache = tmp_path / "empty-hub-cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", *argv, "--tasks", "demo", "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("evalkit: error: ") and str(cache) in lines[0] and "--weights" in lines[0]
    assert time.monotonic() - t0 < 120  # interpreter + torch start-up; the lookup itself takes milliseconds


# --------------------------------------------------------------------------- online, simulated


@pytest.fixture
def online(monkeypatch, hf_cache):
    """Downloads allowed, with every path off the machine replaced or pointed at localhost."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_download(*a, **k):
        raise AssertionError("unexpected download")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    return hf_cache


def test_download_says_what_where_and_how_big_first(online, monkeypatch, capsys):
    import huggingface_hub

    f = CARDS["eva-clip-18b"].hub
    monkeypatch.setattr(hub, "_remote_size", lambda file, timeout: None)  # the Hub knows no size
    calls = []

    def fake_download(repo_id, filename, *, cache_dir, etag_timeout, endpoint):
        calls.append((repo_id, filename, cache_dir))
        return str(put_in_hub_cache(Path(cache_dir), repo_id, filename, lambda p: p.write_bytes(b"w")))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "_free_bytes", lambda folder: 10**12)
    found = locate([f], name="eva-clip-18b")
    assert calls == [("BAAI/EVA-CLIP-18B", "EVA_CLIP_18B_psz14_s6B.fp16.pt", str(online))]
    assert found.downloaded and found.uri == f"hf://BAAI/EVA-CLIP-18B@{REV}/EVA_CLIP_18B_psz14_s6B.fp16.pt"
    err = capsys.readouterr().err.splitlines()
    assert err == [f"eva-clip-18b: downloading BAAI/EVA-CLIP-18B/EVA_CLIP_18B_psz14_s6B.fp16.pt (36.7 GB) into {online}"]
    # the second time it is in the cache: no download
    assert locate([f], name="eva-clip-18b") == Located(found.path, f, REV, downloaded=False)


@pytest.fixture
def local_hub(monkeypatch):
    """A Hub on localhost serving org/repo/w.bin (and 404 for anything else); huggingface_hub's
    endpoint, and the URL template it built from it at import, both point at it."""
    import hashlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from huggingface_hub import constants

    body = bytes(range(256)) * 400
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _head(self) -> bool:
            seen.append(f"{self.command} {self.path}")
            if self.path.startswith("/org/repo/resolve/main/w.bin"):
                self.send_response(200)
                self.send_header("X-Repo-Commit", REV)
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return True
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False

        do_HEAD = _head

        def do_GET(self):
            if self._head():
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    yield body, seen
    server.shutdown()
    server.server_close()


def test_download_from_a_local_hub_lands_in_the_cache(online, local_hub, monkeypatch, capsys):
    import huggingface_hub

    body, seen = local_hub
    # the real download function (the `online` fixture replaced it to catch unexpected downloads)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", huggingface_hub.file_download.hf_hub_download)
    files = [HubFile("org/repo", "w.safetensors"), HubFile("org/repo", "w.bin")]  # only the .bin exists
    found = locate(files, name="m")
    assert found.downloaded and found.path.read_bytes() == body
    assert found.uri == f"hf://org/repo@{REV}/w.bin" and found.path.is_relative_to(online)
    assert capsys.readouterr().err.splitlines()[0] == f"m: downloading org/repo/w.bin (102.4 kB) into {online}"
    assert "GET /org/repo/resolve/main/w.bin" in seen  # served here, by the local Hub
    assert locate(files, name="m").downloaded is False  # now in the cache


def test_download_skips_alternatives_the_hub_lacks_and_checks_disk_space(online, monkeypatch):
    files = [HubFile("org/r", "a.safetensors"), HubFile("org/r", "a.bin")]

    def remote_size(file, timeout):
        if file.filename.endswith(".safetensors"):
            raise hub._Missing(str(file))
        return 5 * 10**9

    monkeypatch.setattr(hub, "_remote_size", remote_size)
    monkeypatch.setattr(hub, "_free_bytes", lambda folder: 10**9)
    with pytest.raises(ModelLoadError, match=r"org/r/a\.bin needs 5\.0 GB but .* has 1\.0 GB free"):
        locate(files, name="m")


def test_an_unanswering_hub_fails_within_the_timeout_in_one_line(online, monkeypatch):
    """A server on localhost that accepts and never answers: the probe gives up after
    HF_HUB_ETAG_TIMEOUT, with no retries and no log lines."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # huggingface_hub built its URL template from the endpoint at import: point both at localhost
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    try:
        t0 = time.monotonic()
        with pytest.raises(ModelLoadError) as err:
            locate([HubFile("org/r", "w.bin")], name="m")
        assert time.monotonic() - t0 < 15
    finally:
        stop.set()
        for c in held:
            c.close()
        server.close()
    assert held, "the request never reached the local server"
    msg = str(err.value)
    assert "\n" not in msg and "cannot be reached" in msg and "org/r/w.bin" in msg and "--weights" in msg


# --------------------------------------------------------------------------- wrong architecture


@pytest.fixture
def other_tiny_arch(tmp_path) -> str:
    import open_clip

    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    cfg["vision_cfg"].update(patch_size=4, layers=3)  # another patch size, one more block
    path = tmp_path / "evalkit-tiny-p4.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return "evalkit-tiny-p4"


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_checkpoint_of_another_architecture_names_keys_and_shapes(tiny_arch, other_tiny_arch, tmp_path, fmt):
    import open_clip

    sd = open_clip.create_model(tiny_arch).state_dict()
    ckpt = tmp_path / f"tiny.{fmt}"
    if fmt == "bin":
        torch.save(sd, ckpt)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt))
    with pytest.raises(ModelLoadError) as err:
        load_open_clip(other_tiny_arch, str(ckpt))
    msg = str(err.value)
    assert "\n" not in msg
    assert "visual.conv1.weight: checkpoint [64, 3, 8, 8], model [64, 3, 4, 4]" in msg
    assert "missing (" in msg and "visual.transformer.resblocks.2." in msg
    assert "positional_embedding" not in msg  # open_clip resizes those; not a mismatch
    assert describe_mismatch(tiny_arch, ckpt) is None  # the right architecture: nothing to report
