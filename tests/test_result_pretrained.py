"""A result's clip_benchmark ``pretrained`` key names the weights portably (a tag, a file name), never
by an absolute local path; the whole path stays in the result's provenance (``evalkit.weights``)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from fixtures import make_folder

from evalkit.cli import main as cli
from evalkit.models.encoder import weights_label


@pytest.mark.parametrize("weights, label", [
    ("/data/ckpt/open_clip_model.safetensors", "open_clip_model.safetensors"),  # a local file
    ("ckpt/model.pt", "model.pt"),  # relative: still no folder
    ("/work/evalkit/demo/weights/", "weights"),  # a folder of shards
    ("laion400m_e32", "laion400m_e32"),  # a tag open_clip fetched by URL
    ("hf://BAAI/EVA-CLIP-18B@abc123/EVA_CLIP_18B_psz14_s6B.fp16.pt",
     "hf://BAAI/EVA-CLIP-18B@abc123/EVA_CLIP_18B_psz14_s6B.fp16.pt"),  # portable already
    ("random", "random"),
    ("random-init", "random-init"),
    ("evalkit_plugin_demo-0.1", "evalkit_plugin_demo-0.1"),  # a plugin's own label
])
def test_weights_label(weights, label):
    assert weights_label(weights) == label


def test_a_local_weights_file_is_named_by_its_file_name(tmp_path, tiny_arch):
    """Through `evalkit run --weights FILE`: ``pretrained`` (and the run log's) is the file name,
    ``evalkit.weights`` the absolute path."""
    ckpt = tmp_path / "deep" / "folder" / "tiny-weights.pt"
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(open_clip.create_model(tiny_arch, pretrained=None).state_dict(), ckpt)
    data = make_folder(tmp_path / "data", n_per_class=1)
    out = tmp_path / "out"
    assert cli.main(["run", "--model", f"open_clip:{tiny_arch}", "--weights", str(ckpt), "--tasks", f"folder:{data}",
                     "--output-dir", str(out), "--quiet", "--no-cache"]) == 0
    (path,) = (out / "runs").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["pretrained"] == "tiny-weights.pt"
    assert result["evalkit"]["weights"] == str(ckpt.resolve())
    (line,) = (out / "runs.jsonl").read_text().splitlines()
    assert json.loads(line)["pretrained"] == "tiny-weights.pt"


def test_an_encoder_without_a_label_of_its_loader_is_named_by_its_weights():
    """The EVA-CLIP loader sets no label: the demo's weights folder is named by its name, and a
    copy with other weights (as a plugin may make) by those."""
    import dataclasses

    from evalkit.models import load

    enc = load("eva-clip-demo")
    assert enc.weights.endswith("/weights") and enc.pretrained == "weights"
    assert dataclasses.replace(enc, weights="/elsewhere/mine.pt").pretrained == "mine.pt"
