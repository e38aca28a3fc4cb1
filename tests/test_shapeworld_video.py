"""The shapeworld-video demo task: generated clips (evalkit/demo/shapeworld_video.py) in which the
labelled shape is out of view for part of each clip, written as real video files, cached, and
scored through the real video path. The end-to-end test is the task's regression check: several
frames must beat the one-frame protocol, and both must beat chance."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

import evalkit
from evalkit.data.sources import DataError
from evalkit.data.video import VideoClip, frame_indices, read_frames
from evalkit.demo import shapeworld_video as sv
from evalkit.demo.shapeworld import SHAPES, Scene, render_scene
from evalkit.demo.sources import shapeworld_source

TASK_FILE = Path(__file__).resolve().parents[1] / "tasks" / "demo" / "shapeworld-video.yaml"
CHANCE = 100 / 6
SMALL = 12  # clips in the quick tests: two of each shape, one per half of the design


def _decoded(path: Path) -> list[np.ndarray]:
    n = VideoClip(path).frame_count()
    return [np.asarray(f, dtype=np.int16) for f in read_frames(path, list(range(n)))]


def _is_empty(frame: np.ndarray, background: int) -> bool:
    """Background only: no pixel further from the clip's grey than noise and coding error."""
    return int(np.abs(frame - background).max()) <= 20


def _mask(frame: np.ndarray, background: int) -> np.ndarray:
    """Pixels far from the clip's grey: the shape's."""
    return np.abs(frame - background).max(axis=-1) > 40


def _shows_shape(frame: np.ndarray, background: int) -> bool:
    """A coloured shape: a good many pixels far from the grey (the smallest shape covers ~200)."""
    return int(_mask(frame, background).sum()) >= 100


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> sv.ClipSet:
    return sv.ensure_clips(tmp_path_factory.mktemp("clips"), seed=7, n=SMALL)


def test_design_from_the_specs():
    """Balanced labels; every clip has empty and shape frames; the empty stretch hides the shape
    from `middle` in exactly half the clips of each shape, and never from more than 3 of the 8
    frames uniform-8 takes. Checked with the real samplers' frame indices."""
    specs = [sv.clip_spec(2024, i) for i in range(96)]
    assert [s.label for s in specs] == [i % 6 for i in range(96)]
    mid = frame_indices(sv.FRAMES, "middle")[0]
    u8 = frame_indices(sv.FRAMES, "uniform-8")
    for s in specs:
        assert s.n_frames == sv.FRAMES and len(s.visible) == sv.FRAMES
        empty = s.visible.count(False)
        assert sv.GAP[0] <= empty <= sv.GAP[1] and s.visible.count(True) == sv.FRAMES - empty
        assert sum(s.visible[i] for i in u8) >= 5, s
    for shape in range(6):
        hidden = [not s.visible[mid] for s in specs if s.label == shape]
        assert sum(hidden) == len(hidden) // 2
    # random access: one clip drawn alone is the same clip
    assert sv.clip_spec(2024, 41) == specs[41]
    assert sv.clip_spec(2025, 41) != specs[41]


def test_bad_design_parameters():
    with pytest.raises(ValueError, match="at least 26 frames, got 16"):
        sv.clip_spec(0, 0, n_frames=16)
    with pytest.raises(ValueError, match="index must be >= 0"):
        sv.clip_spec(0, -1)
    with pytest.raises(ValueError, match="n > 0"):
        sv.ensure_clips("/nonexistent", 0, 0)


def test_same_seed_same_decoded_pixels(small_set, tmp_path):
    """A second generation in another folder decodes to identical pixels; another seed does not."""
    again = sv.ensure_clips(tmp_path / "again", seed=7, n=3)
    other = sv.ensure_clips(tmp_path / "other", seed=8, n=3)
    assert again.generated and other.generated
    for i in range(3):
        a, b, c = _decoded(small_set.paths[i]), _decoded(again.paths[i]), _decoded(other.paths[i])
        assert len(a) == len(b) == sv.FRAMES
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_shape_visible_only_where_the_metadata_says(small_set):
    """Decoded pixels agree with each clip's per-frame visibility: empty frames are the clip's
    background only; shape frames show a shape, drawn as ShapeWorld draws it."""
    for spec, path in zip(small_set.specs, small_set.paths, strict=True):
        frames = _decoded(path)
        bg = spec.attrs.background
        assert len(frames) == sv.FRAMES and not all(spec.visible) and any(spec.visible)
        for t, (frame, visible) in enumerate(zip(frames, spec.visible, strict=True)):
            where = f"clip {spec.index} frame {t}"
            if not visible:
                assert _is_empty(frame, bg), where
                continue
            assert _shows_shape(frame, bg), where
            # where the shape is, the decoded frame matches ShapeWorld's drawing of the clip's shape
            # (mask overlap, up to noise and the codec's loss), and not that of any other shape
            mask = _mask(frame, bg)
            iou = {}
            for shape in SHAPES:
                attrs = dataclasses.replace(spec.frame_attrs(t), shape=shape)
                drawn = _mask(np.asarray(render_scene(Scene((attrs,), "", bg, 0), sv.SIZE), dtype=np.int16), bg)
                iou[shape] = (mask & drawn).sum() / (mask | drawn).sum()
            assert iou[spec.shape] > 0.8, (where, iou)
            assert max(v for k, v in iou.items() if k != spec.shape) < iou[spec.shape] - 0.05, (where, iou)


def test_middle_sampler_sees_an_empty_frame_in_half_the_clips(small_set):
    """Through the real sampler: `middle` decodes the shape in clips 6-11 and an empty frame in
    clips 0-5; uniform-8 sees the shape in at least 5 of its frames in every clip."""
    for spec, path in zip(small_set.specs, small_set.paths, strict=True):
        bg = spec.attrs.background
        (middle,) = VideoClip(path).frames("middle")
        assert _shows_shape(np.asarray(middle, dtype=np.int16), bg) == (spec.index >= 6), spec.index
        u8 = VideoClip(path).frames("uniform-8")
        assert sum(_shows_shape(np.asarray(f, dtype=np.int16), bg) for f in u8) >= 5, spec.index


def test_cache_reused_and_partial_set_regenerated(tmp_path):
    root = tmp_path / "cache"
    first = sv.ensure_clips(root, seed=3, n=4)
    assert first.generated and first.folder == root / sv.set_name(3, 4)
    manifest = json.loads((first.folder / sv.MANIFEST).read_text())
    assert [c["empty_from"] for c in manifest["clips"]] == [s.gap_start for s in first.specs]
    stamps = [p.stat().st_mtime_ns for p in first.paths]
    reused = sv.ensure_clips(root, seed=3, n=4)
    assert not reused.generated and reused.digest == first.digest
    assert [p.stat().st_mtime_ns for p in reused.paths] == stamps
    good = first.paths[2].read_bytes()

    # a truncated clip: the set is not reused but generated again, byte for byte the same
    first.paths[2].write_bytes(good[: len(good) // 2])
    assert "truncated" in (sv.check_set(first.folder, 3, 4) or "")
    again = sv.ensure_clips(root, seed=3, n=4)
    assert again.generated and again.paths[2].read_bytes() == good and again.digest == first.digest

    # a folder under the set's name without its manifest (never complete) is not reused either
    (again.folder / sv.MANIFEST).unlink()
    (again.folder / sv.clip_name(3)).unlink()
    assert "missing" in (sv.check_set(again.folder, 3, 4) or "")
    assert sv.ensure_clips(root, seed=3, n=4).generated
    assert sv.check_set(again.folder, 3, 4) is None

    # a same-size clip whose content changed is caught by its hash
    p = again.paths[1]
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    assert "SHA-256" in (sv.check_set(again.folder, 3, 4) or "")
    assert sv.ensure_clips(root, seed=3, n=4).generated
    assert sorted(os.listdir(root)) == [sv.set_name(3, 4)]  # no temporary folder left behind


def test_interrupted_generation_leaves_nothing_to_reuse(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    real = sv.write_clip
    calls = []

    def dying(path, frames, codec=None, fps=sv.FPS):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed mid-set
        real(path, frames, codec, fps)

    monkeypatch.setattr(sv, "write_clip", dying)
    with pytest.raises(KeyboardInterrupt):
        sv.ensure_clips(root, seed=5, n=4)
    assert list(root.iterdir()) == []  # neither a set under its name nor a temporary folder
    monkeypatch.setattr(sv, "write_clip", real)
    done = sv.ensure_clips(root, seed=5, n=4)
    assert done.generated and sv.check_set(done.folder, 5, 4) is None


def test_source_loads_video_clips(tmp_path, monkeypatch):
    """The `task: video` mode of the shapeworld source: clips in $EVALKIT_CACHE/shapeworld-video,
    each sample's loader a VideoClip, labelled by shape; bad settings name the task."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path))
    data = shapeworld_source({"type": "shapeworld", "task": "video", "n": 7, "seed": 11}, None, "swv")
    assert data.classnames == list(SHAPES)
    assert data.info["clips"] == 7 and data.info["middle_frame_shows_shape"] == 1  # clips 0-5 hide it
    samples = [s for u in data.units for s in u.samples()]
    assert [label for _, _, label in samples] == [i % 6 for i in range(7)]
    for i, (key, load, _) in enumerate(samples):
        clip = load()
        assert isinstance(clip, VideoClip) and key == f"shapeworld-video-s11-{i:05d}"
        assert clip.path.parent == tmp_path / "shapeworld-video" / sv.set_name(11, 7)
        assert clip.frame_count() == sv.FRAMES
    with pytest.raises(DataError, match="task 'swv'.*at least 26 frames"):
        shapeworld_source({"type": "shapeworld", "task": "video", "n": 2, "frames": 10}, None, "swv")
    with pytest.raises(DataError, match="task 'swv'.*integers"):
        shapeworld_source({"type": "shapeworld", "task": "video", "n": "many"}, None, "swv")


def test_uniform8_beats_middle_end_to_end(tmp_path, monkeypatch):
    """The regression check, through evalkit.evaluate and the real task file: the one-frame
    protocol is far above chance, and eight frames pooled are far above one."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    acc = {}
    for frames in (None, "uniform-8"):
        report = evalkit.evaluate("eva-clip-demo", "shapeworld-video", output_dir=out, frames=frames,
                                  cache_dir=tmp_path / "cache", progress=False, raise_errors=True)
        (result,) = report.results
        assert result.evalkit["task_file"] == str(TASK_FILE)
        assert result.evalkit["samples"] == 96 and result.evalkit["skipped"] == 0
        acc[result.evalkit["frame_sampler"]] = 100 * result.metrics["acc1"]
    runs = out / "runs" / "eva-clip-demo"
    assert sorted(p.name for p in runs.glob("*.json")) == ["shapeworld-video.json", "shapeworld-video_uniform-8.json"]
    assert acc["middle"] >= CHANCE + 25, acc
    assert acc["uniform-8"] >= acc["middle"] + 20, acc


def _tiny_video_task(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "swv-tiny.yaml").write_text(
        "task: swv-tiny\nversion: 1\nfamily: classification\n"
        "source: {type: shapeworld, task: video, n: 6, frames: 26, seed: 5}\n"
        "templates: ['a {c} shape.']\nmetric: acc1\nview: {transform: crop, frames: middle}\n")
    return folder


def _clip_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.mp4")) if root.exists() else []


def test_cache_dir_moves_the_generated_clips(tmp_path, monkeypatch):
    """`evalkit run --cache-dir D` puts the demo's clips under D, nothing under the default cache
    folder; `--no-cache` leaves them nowhere once the run is over."""
    from evalkit.cli import main as cli
    default = tmp_path / "default-cache"
    monkeypatch.setenv("EVALKIT_CACHE", str(default))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    tasks = _tiny_video_task(tmp_path / "tasks")
    argv = ["run", "--model", "eva-clip-demo", "--tasks", "swv-tiny", "--task-dir", str(tasks), "--quiet"]
    mine = tmp_path / "mine"
    assert cli.main([*argv, "--output-dir", str(tmp_path / "out1"), "--cache-dir", str(mine)]) == 0
    clips = _clip_files(mine / "shapeworld-video")
    assert len(clips) == 6 and all(p.parent.name == sv.set_name(5, 6, 26) for p in clips), clips
    assert _clip_files(default) == [] and _clip_files(tmp_path / "home") == []
    result = json.loads((tmp_path / "out1" / "runs" / "eva-clip-demo" / "swv-tiny.json").read_text())
    assert result["evalkit"]["samples"] == 6 and result["evalkit"]["data"]["path"] == str(clips[0].parent)

    assert cli.main([*argv, "--output-dir", str(tmp_path / "out2"), "--no-cache"]) == 0
    assert _clip_files(default) == [] and _clip_files(tmp_path / "home") == []
    result = json.loads((tmp_path / "out2" / "runs" / "eva-clip-demo" / "swv-tiny.json").read_text())
    used = Path(result["evalkit"]["data"]["path"])  # a temporary folder, gone with the run
    assert result["evalkit"]["samples"] == 6 and used.name == sv.set_name(5, 6, 26) and not used.exists()
    assert len(_clip_files(mine)) == 6  # the other run's set, untouched
    # outside a run (a data check) the default folder is used, as before
    data = shapeworld_source({"type": "shapeworld", "task": "video", "n": 6, "frames": 26, "seed": 5}, None, "swv")
    assert Path(data.info["path"]).parent == default / "shapeworld-video" and len(_clip_files(default)) == 6
