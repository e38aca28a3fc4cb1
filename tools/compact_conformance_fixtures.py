#!/usr/bin/env python3
"""Regenerate the compact EVA-CLIP conformance fixtures in ``tests/fixtures/`` from the originals.

The originals are BAAI's reference outputs for two tiny random-weight EVA-CLIP configurations, kept
in the project's shared reference material beside the repository
(``../shared/reference/eva_clip_conformance/`` and ``../shared/reference/eva_clip_{18b,8b}_state_dict.tsv``).
Each original ``weights.safetensors`` is 7 MB, almost all of it ``text.token_embedding.weight``
(49408 x 32 fp32), of which only the rows of token ids that occur in ``io.safetensors``' ``tokens``
can reach any output. This script writes, for each style:

- ``config.json``, ``captions.txt``, ``io.safetensors``: copied byte for byte;
- ``weights_compact.safetensors``: every tensor of ``weights.safetensors`` unchanged (fp32, exact)
  except the token embedding, which is stored as ``text.token_embedding.weight.ids`` (int64, the
  sorted distinct ids of ``tokens``) and ``text.token_embedding.weight.rows`` (those rows, fp32);
  the file's metadata entry ``evalkit_compact`` (JSON) records the full shape and dtype and the
  SHA-256 of the original file;

and copies the two state-dict listings to ``tests/fixtures/state_dicts/``. The tests rebuild a
full-shape checkpoint (unused rows zero) in a temporary folder and load it with the real loader.

Before writing, the script checks that the compaction loses nothing that matters: every kept tensor
equals the original, and the rebuilt checkpoint gives bit-identical ``encode_image`` /
``encode_text`` outputs to the original one (and matches BAAI's features to 1e-5).

Run from the repository root::

    python tools/compact_conformance_fixtures.py [--reference PATH] [--out tests/fixtures] [--check]

``--check`` writes nothing and fails if any file under ``--out`` differs from what would be written.
The tests never import this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load, save

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference"
DEFAULT_OUT = REPO / "tests" / "fixtures"

STYLES = ("tiny-18b-style", "tiny-8b-style")
COPIED = ("config.json", "captions.txt", "io.safetensors")
LISTINGS = ("eva_clip_18b_state_dict.tsv", "eva_clip_8b_state_dict.tsv")
EMBEDDING = "text.token_embedding.weight"
COMPACT_NAME = "weights_compact.safetensors"
FORMAT = "evalkit-compact-embedding-v1"
METADATA_KEY = "evalkit_compact"


def compact(weights: Path, io: Path) -> bytes:
    """The bytes of the compact weights file for the original ``weights`` and ``io`` files."""
    raw = weights.read_bytes()
    tensors = load(raw)
    full = tensors.pop(EMBEDDING)
    tokens = load(io.read_bytes())["tokens"]
    ids = torch.unique(tokens).to(torch.int64)  # sorted, distinct
    if ids.min() < 0 or ids.max() >= full.shape[0]:
        raise ValueError(f"{io}: token ids outside [0, {full.shape[0]})")
    tensors[f"{EMBEDDING}.ids"] = ids
    tensors[f"{EMBEDDING}.rows"] = full[ids].clone()
    info = {
        "format": FORMAT,
        "key": EMBEDDING,
        "shape": list(full.shape),
        "dtype": str(full.dtype).removeprefix("torch."),
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "source": "BAAI EVA (github.com/baaivision/EVA, EVA-CLIP-18B/shinji/eva_clip @ 5623d08), "
                  "tiny random-weight conformance checkpoint; unused token-embedding rows dropped",
    }
    # One metadata entry holding sorted JSON: safetensors writes several entries in no fixed
    # order, and --check compares bytes.
    return save(tensors, metadata={METADATA_KEY: json.dumps(info, sort_keys=True)})


def expand(data: bytes, metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """The full-shape state dict of a compact file (unused embedding rows zero)."""
    tensors = load(data)
    ids = tensors.pop(f"{EMBEDDING}.ids")
    rows = tensors.pop(f"{EMBEDDING}.rows")
    full = torch.zeros(json.loads(metadata[METADATA_KEY])["shape"], dtype=rows.dtype)
    full[ids] = rows
    tensors[EMBEDDING] = full
    return tensors


def verify(folder: Path, data: bytes) -> None:
    """Check that the compact file rebuilds a checkpoint that behaves exactly like the original."""
    from evalkit.models.checkpoint import load_checkpoint
    from evalkit.models.eva_clip import EvaClip, EvaClipConfig

    original = load((folder / "weights.safetensors").read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / COMPACT_NAME
        path.write_bytes(data)
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        rebuilt = expand(data, metadata)
        if rebuilt.keys() != original.keys():
            raise AssertionError(f"{folder}: keys differ after compaction")
        for key, value in original.items():
            if key == EMBEDDING:
                ids = load(data)[f"{EMBEDDING}.ids"]
                same = torch.equal(rebuilt[key][ids], value[ids]) and rebuilt[key].shape == value.shape
            else:
                same = torch.equal(rebuilt[key], value) and rebuilt[key].dtype == value.dtype
            if not same:
                raise AssertionError(f"{folder}: {key} changed by compaction")
        rebuilt_file = Path(tmp) / "weights.safetensors"
        rebuilt_file.write_bytes(save(rebuilt))

        io = load((folder / "io.safetensors").read_bytes())
        cfg = EvaClipConfig.from_json(folder / "config.json")
        outputs = []
        for weights in (folder / "weights.safetensors", rebuilt_file):
            model = EvaClip(cfg).eval()
            load_checkpoint(model, weights)
            with torch.no_grad():
                outputs.append((model.encode_image(io["images"]), model.encode_text(io["tokens"])))
    (img_orig, txt_orig), (img_new, txt_new) = outputs
    if not (torch.equal(img_orig, img_new) and torch.equal(txt_orig, txt_new)):
        raise AssertionError(f"{folder}: the rebuilt checkpoint gives other outputs than the original")
    torch.testing.assert_close(img_new, io["image_features"], atol=1e-5, rtol=0)
    torch.testing.assert_close(txt_new, io["text_features"], atol=1e-5, rtol=0)


def build(reference: Path, *, check_outputs: bool = True) -> dict[Path, bytes]:
    """Relative output path -> bytes, for every file this script owns."""
    conformance = reference / "eva_clip_conformance"
    files: dict[Path, bytes] = {}
    for style in STYLES:
        folder = conformance / style
        for name in COPIED:
            files[Path("eva_clip_conformance") / style / name] = (folder / name).read_bytes()
        data = compact(folder / "weights.safetensors", folder / "io.safetensors")
        if check_outputs:
            verify(folder, data)
        files[Path("eva_clip_conformance") / style / COMPACT_NAME] = data
    for name in LISTINGS:
        files[Path("state_dicts") / name] = (reference / name).read_bytes()
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                    help="the shared reference folder holding eva_clip_conformance/ and the listings")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="fail if any file under --out differs from what would be written")
    ap.add_argument("--no-verify", action="store_true", help="skip running the model on original and rebuilt weights")
    args = ap.parse_args(argv)

    if not (args.reference / "eva_clip_conformance").is_dir():
        print(f"{args.reference / 'eva_clip_conformance'} not found; pass --reference", file=sys.stderr)
        return 2
    files = build(args.reference, check_outputs=not args.no_verify)

    stale = []
    for rel, data in files.items():
        target = args.out / rel
        if args.check:
            if not target.is_file() or target.read_bytes() != data:
                stale.append(rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        shutil.move(tmp, target)
        print(f"wrote {target} ({len(data):,} bytes)")
    if args.check:
        if stale:
            for rel in stale:
                print(f"{args.out / rel} is out of date", file=sys.stderr)
            print("run tools/compact_conformance_fixtures.py", file=sys.stderr)
            return 1
        print(f"{len(files)} files under {args.out} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
