"""Zero-shot retrieval: the family end to end, equal to clip_benchmark's ``zeroshot_retrieval.evaluate``,
every source layout in miniature, and bad input."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from fixtures import image_bytes, make_image

from evalkit import api
from evalkit.cli import main as cli
from evalkit.data.captions import captions_source
from evalkit.data.sources import DataError
from evalkit.tasks.spec import TaskIndex, adhoc_name
from evalkit.views.image import image_transform

WORDS = "a red square on the left of blue circle near small green triangle under big grey shape".split()


def _captions(i: int) -> list[str]:
    n = 5 + i % 3  # 5-7 captions an image
    caps = [" ".join(WORDS[(i + j) % len(WORDS):][: 3 + (i * j) % 9]) or "a shape" for j in range(n)]
    if i == 2:
        caps[0] = " ".join(["a very long caption about shapes"] * 30)  # longer than the 77-token context
    return caps


def _items(n: int = 9) -> list[tuple[str, bytes, list[str]]]:
    return [(f"{1000 + i}.jpg", image_bytes(make_image(i % 6, i, size=36 + i), "JPEG"), _captions(i)) for i in range(n)]


def make_karpathy(root: Path, items, *, coco: bool = False, split: str = "test") -> Path:
    images_dir = root / ("val2014" if coco else "flickr30k-images")
    images_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (name, data, caps) in enumerate(items):
        (images_dir / name).write_bytes(data)
        entry = {"filename": name, "imgid": i, "split": split,
                 "sentences": [{"raw": c, "imgid": i, "sentid": 10 * i + j} for j, c in enumerate(caps)]}
        if coco:
            entry.update(filepath="val2014", cocoid=5000 + i)
        images.append(entry)
    images.append({"filename": "train.jpg", "imgid": 99, "split": "train", "sentences": []})
    (root / f"dataset_{'coco' if coco else 'flickr30k'}.json").write_text(json.dumps({"images": images}))
    return root


def make_cb_flickr(root: Path, items) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    for name, data, caps in items:
        (root / name).write_bytes(data)
        lines += [f"{name},{c}" for c in caps]
    (root / "flickr30k_test_karpathy.txt").write_text("\n".join(lines) + "\n")
    return root


def make_cb_coco(root: Path, items) -> Path:
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, (name, data, caps) in enumerate(items):
        (root / "val2014" / name).write_bytes(data)
        images.append({"id": 7000 - i, "file_name": name})  # ids in reverse: read in sorted id order
        anns += [{"image_id": 7000 - i, "id": len(anns), "caption": c} for c in caps]
    (root / "coco_test_karpathy.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def make_captions_dir(root: Path, items) -> Path:
    import csv

    root.mkdir(parents=True, exist_ok=True)
    with (root / "captions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for name, data, caps in items:
            (root / name).write_bytes(data)
            w.writerows([name, c] for c in caps)
    return root


def make_wds_retrieval(root: Path, items, nshards: int = 2) -> Path:
    split = root / "test"
    split.mkdir(parents=True, exist_ok=True)
    per = -(-len(items) // nshards)
    for s in range(nshards):
        with tarfile.open(split / f"{s}.tar", "w") as tar:
            for k, (_name, data, caps) in enumerate(items[s * per:(s + 1) * per]):
                for ext, payload in (("jpg", data), ("txt", "\n".join(caps).encode())):
                    info = tarfile.TarInfo(f"s{s}{k:04d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (split / "nshards.txt").write_text(f"{nshards}\n")
    (root / "dataset_type.txt").write_text("retrieval\n")
    return root


def _read(source: dict, root: Path):
    data = captions_source(source, root, "t")
    samples = [(k, lab) for u in data.units for k, _load, lab in u.samples()]
    return data, samples


# ----------------------------------------------------------------------------- sources


def test_every_layout_reads_the_same_images_and_captions(tmp_path):
    items = _items()
    expected = [caps for _, _, caps in items]
    layouts = {
        "karpathy": (make_karpathy(tmp_path / "k", items), {"annotations": ["dataset_flickr30k.json"],
                                                              "images": ["flickr30k-images"]}),
        "karpathy-coco": (make_karpathy(tmp_path / "kc", items, coco=True), {"annotations": ["dataset_coco.json"]}),
        "cb-flickr": (make_cb_flickr(tmp_path / "cf", items), {"annotations": ["flickr30k_test_karpathy.txt"]}),
        "cb-coco": (make_cb_coco(tmp_path / "cc", items), {"annotations": ["coco_test_karpathy.json"],
                                                            "images": ["val2014"]}),
        "captions.csv": (make_captions_dir(tmp_path / "cs", items), {}),
    }
    for name, (root, extra) in layouts.items():
        data, samples = _read({"type": "captions", "path": str(root), **extra}, root)
        caps = [lab for _, lab in samples]
        if name == "cb-coco":  # sorted by image id: the reverse of the file's order here
            caps = caps[::-1]
        assert caps == expected, name
        assert data.info["images"] == len(items) and data.info["captions"] == sum(map(len, expected))
        assert data.info["listed_missing"] == 0, name


def test_cb_flickr_lines_are_split_as_clip_benchmark_does(tmp_path):
    from clip_benchmark.datasets.flickr import Flickr

    items = _items(3)
    items[1] = (items[1][0], items[1][1], ['a caption, with a comma', '"quoted, as pandas writes it"'] + items[1][2])
    root = make_cb_flickr(tmp_path / "cf", items)
    _, samples = _read({"type": "captions", "path": str(root), "annotations": ["flickr30k_test_karpathy.txt"]}, root)
    theirs = Flickr(str(root), str(root / "flickr30k_test_karpathy.txt")).data
    assert [(k, lab) for k, lab in samples] == [(img, caps) for img, caps in theirs]


def test_missing_image_is_a_counted_skipped_sample(tmp_path, tiny_arch, capsys):
    items = _items(6)
    root = make_karpathy(tmp_path / "flickr30k", items)
    (root / "flickr30k-images" / items[3][0]).unlink()
    data, _ = _read({"type": "captions", "path": str(root), "annotations": ["dataset_flickr30k.json"],
                     "images": ["flickr30k-images"]}, root)
    assert data.info["listed_missing"] == 1
    out = tmp_path / "out"
    argv = ["run", "--model", f"open_clip:{tiny_arch}", "--tasks", "flickr30k", "--data-root", str(tmp_path),
            "--output-dir", str(out), "--quiet"]
    assert cli.main(argv) == 0
    res = json.loads(next((out / "runs").rglob("flickr30k.json")).read_text())
    ev = res["evalkit"]
    assert ev["skipped"] == 1 and ev["skipped_keys"] == [items[3][0]] and ev["images"] == 5
    assert ev["captions"] == sum(len(c) for i, (_, _, c) in enumerate(items) if i != 3)
    log = next((out / "runs").rglob("flickr30k.skipped.log")).read_text()
    assert log.startswith(f"{items[3][0]}\tFileNotFoundError: image {items[3][0]} not found")
    assert cli.main([*argv, "--strict"]) == 1
    assert items[3][0] in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("no-test-split", r"dataset_flickr30k.json: no images in split 'test' \(splits found: train\)"),
    ("bad-json", r"dataset_flickr30k.json:1:\d+: invalid JSON"),
    ("duplicate", r"dataset_flickr30k.json: image '1000.jpg' is listed twice"),
    ("bad-csv-line", r"flickr30k_test_karpathy.txt:3: expected '<image>.jpg,<caption>'"),
    ("coco-unknown-image", r"coco_test_karpathy.json: annotations\[0\] names image id 1"),
])
def test_bad_annotations_name_the_file(tmp_path, case, message):
    root = tmp_path / "d"
    root.mkdir()
    ann = ["dataset_flickr30k.json"]
    if case == "no-test-split":
        (root / "dataset_flickr30k.json").write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "train"}]}))
    elif case == "bad-json":
        (root / "dataset_flickr30k.json").write_text('{"images": [}')
    elif case == "duplicate":
        im = {"filename": "1000.jpg", "split": "test", "sentences": [{"raw": "x"}]}
        (root / "dataset_flickr30k.json").write_text(json.dumps({"images": [im, im]}))
    elif case == "bad-csv-line":
        (root / "flickr30k_test_karpathy.txt").write_text("image,caption\na.jpg,ok\nno image here\n")
        ann = ["flickr30k_test_karpathy.txt"]
    else:
        (root / "coco_test_karpathy.json").write_text(json.dumps({"images": [], "annotations": [{"image_id": 1}]}))
        ann = ["coco_test_karpathy.json"]
    with pytest.raises(DataError, match=message):
        captions_source({"type": "captions", "path": str(root), "annotations": ann}, tmp_path, "t")


def test_image_without_captions_stays_in_the_gallery(tmp_path, tiny_arch):
    items = _items(5)
    items[4] = (items[4][0], items[4][1], [])
    # captions.csv cannot list an image without a caption; Karpathy's JSON can
    make_karpathy(tmp_path / "flickr30k", items)
    report = api.evaluate(f"open_clip:{tiny_arch}", "flickr30k", data_root=tmp_path, output_dir=tmp_path / "out",
                          progress=False, raise_errors=True)
    ev = report.results[0].evalkit
    assert ev["images"] == 5 and ev["images_without_captions"] == 1 and ev["captions"] == sum(len(c) for *_, c in items)


# ----------------------------------------------------------------------------- the family


def _cb_evaluate(encoder, items, batch_size=4):
    """clip_benchmark's own retrieval evaluate on the same model, images and captions."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics.zeroshot_retrieval import evaluate
    from PIL import Image

    preprocess = image_transform(encoder, "crop")  # bit-for-bit torchvision's Compose (test_image_pipeline)
    ds = [(preprocess(Image.open(io.BytesIO(data))), caps) for _, data, caps in items]
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=image_captions_collate_fn)
    tokenizer = encoder.tokenizer  # open_clip's ids exactly (test_tokenize)
    return evaluate(encoder.model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])


@pytest.mark.parametrize("arch", ["tiny", "ViT-B-32"])
def test_equals_clip_benchmark_evaluate(arch, tiny_arch, tmp_path):
    from evalkit import models
    from evalkit.tasks.base import RunContext
    from evalkit.tasks.retrieval import RetrievalFamily

    items = _items(11)
    make_karpathy(tmp_path / "flickr30k", items)
    encoder = models.load(f"open_clip:{tiny_arch if arch == 'tiny' else arch}")  # random weights, seeded
    spec = TaskIndex.load().tasks["flickr30k"]
    ctx = RunContext(data_root=tmp_path, output_dir=tmp_path / "out", transform="crop", batch_size=5, progress=False)
    ours = RetrievalFamily().run(spec, encoder, ctx)
    theirs = _cb_evaluate(encoder, items)
    assert set(theirs) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)}
    for key, value in theirs.items():
        assert ours.metrics[key] == value, key
    for k in (1, 5, 10):
        assert ours.metrics[f"t2i_R@{k}"] == ours.metrics[f"image_retrieval_recall@{k}"]
        assert ours.metrics[f"i2t_R@{k}"] == ours.metrics[f"text_retrieval_recall@{k}"]
    assert ours.metrics["mean_recall"] == pytest.approx(sum(theirs.values()) / 6)
    ev = ours.evalkit
    assert ev["captions_truncated"] == 1 and ev["transform"] == "crop" and ev["metric"] == "mean_recall"
    assert ev["task_version"] == spec.version == "1"
    assert ours.task == "zeroshot_retrieval"


def test_every_layout_gives_the_same_metrics(tiny_arch, tmp_path):
    items = _items(8)
    make_karpathy(tmp_path / "a" / "flickr30k", items)
    make_cb_flickr(tmp_path / "b" / "flickr30k", items)
    make_wds_retrieval(tmp_path / "c" / "wds_flickr30k", items)
    got = []
    for sub, task in (("a", "flickr30k"), ("b", "flickr30k"), ("c", "flickr30k"), ("c", "wds/flickr30k")):
        r = api.evaluate(f"open_clip:{tiny_arch}", task, data_root=tmp_path / sub, output_dir=tmp_path / "o" / sub,
                         progress=False, raise_errors=True).results[0]
        got.append({k: v for k, v in r.metrics.items()})
    assert all(g == got[0] for g in got[1:])


def test_adhoc_captions_folder_and_predictions(tiny_arch, tmp_path):
    items = _items(6)
    root = make_captions_dir(tmp_path / "mine", items)
    out = tmp_path / "out"
    assert cli.main(["run", "--model", f"open_clip:{tiny_arch}", "--tasks", f"captions:{root}", "--output-dir",
                     str(out), "--quiet", "--save-predictions", "--transform", "best-of-both"]) == 0
    folder = out / "runs" / f"open_clip_{tiny_arch}"
    res = json.loads((folder / f"{adhoc_name(f'captions:{root}')}.json").read_text())
    assert res["task"] == "zeroshot_retrieval" and "mean_recall@crop" in res["metrics"]
    assert res["metrics"]["mean_recall"] == max(res["metrics"]["mean_recall@crop"], res["metrics"]["mean_recall@squash"])
    preds = [json.loads(ln) for ln in (folder / f"{adhoc_name(f'captions:{root}')}.predictions.squash.jsonl").read_text().splitlines()]
    images = [p for p in preds if p["query"] == "image"]
    captions = [p for p in preds if p["query"] == "caption"]
    assert len(images) == 6 and len(captions) == sum(len(c) for *_, c in items)
    assert all(len(p["top_captions"]) == 10 for p in images) and all(len(p["top_images"]) == 6 for p in captions)
    # recall@1 from the predictions equals the metric
    r1 = sum(p["rank_of_own_image"] == 0 for p in captions) / len(captions)
    assert r1 == pytest.approx(res["metrics"]["image_retrieval_recall@1@squash"])


def test_retrieval_tasks_aliases_and_options():
    index = TaskIndex.load()
    assert [s.name for s in index.resolve(["retrieval"])] == ["flickr30k", "coco"]
    assert index.lookup("mscoco_captions").name == "coco"
    assert index.resolve(["wds/mscoco_captions"])[0].name == "wds/mscoco_captions"
    assert index.tasks["coco"].options == {"recall_k": [1, 5, 10]} and index.tasks["coco"].metric == "mean_recall"


def test_family_keys_are_checked(tmp_path):
    from evalkit.tasks.spec import TaskSpecError

    d = tmp_path / "t"
    d.mkdir()
    (d / "r.yaml").write_text("task: r\nfamily: retrieval\nsource: {type: captions}\nrecall_k: [0]\n")
    index = TaskIndex.load([d])
    with pytest.raises(TaskSpecError, match=r"r\.yaml: field 'recall_k' must be a list of whole numbers"):
        _validate(index.tasks["r"])
    (d / "r.yaml").write_text("task: r\nfamily: classification\nsource: {type: captions}\nrecall_k: [1]\n")
    with pytest.raises(TaskSpecError, match=r"r\.yaml: unknown field\(s\) \['recall_k'\]"):
        api.resolve_tasks("r", [d])
    (d / "r.yaml").write_text("task: r\nfamily: retrieval\nsource: {type: captions}\nrecal_k: [1]\n")
    with pytest.raises(TaskSpecError, match=r"unknown field\(s\) \['recal_k'\]; allowed: .*'recall_k'"):
        api.resolve_tasks("r", [d])


def _validate(spec):
    from evalkit.tasks.retrieval import RetrievalFamily

    return RetrievalFamily().validate(spec)


def test_edited_captions_are_not_served_from_the_cache(tiny_arch, tmp_path):
    items = _items(6)
    root = make_captions_dir(tmp_path / "mine", items)
    cache = tmp_path / "cache"
    kw = dict(output_dir=tmp_path / "out", cache_dir=cache, progress=False, raise_errors=True)
    first = api.evaluate(f"open_clip:{tiny_arch}", f"captions:{root}", **kw).results[0]
    text = (root / "captions.csv").read_text().splitlines()
    (root / "captions.csv").write_text("\n".join(text[:-3]) + "\n")  # the last image loses 3 captions
    again = api.evaluate(f"open_clip:{tiny_arch}", f"captions:{root}", **kw).results[0]
    assert again.evalkit["captions"] == first.evalkit["captions"] - 3


def test_best_of_both_reports_one_transforms_recalls(tiny_arch, tmp_path):
    items = [(n, image_bytes(make_image(i % 6, i, size=30).resize((30 + 9 * (i % 3), 30)), "JPEG"), c)
             for i, (n, _, c) in enumerate(_items(9))]  # non-square: crop and squash differ
    root = make_captions_dir(tmp_path / "mine", items)
    r = api.evaluate(f"open_clip:{tiny_arch}", f"captions:{root}", transform="best-of-both",
                     output_dir=tmp_path / "out", progress=False, raise_errors=True).results[0]
    m, best = r.metrics, r.evalkit["best_transform"]
    six = [m[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
    assert m["mean_recall"] == pytest.approx(sum(six) / 6)
    assert all(m[k] == m[f"{k}@{best}"] for k in ("mean_recall", "i2t_R@1", "t2i_R@10"))
    other = "crop" if best == "squash" else "squash"
    assert m[f"mean_recall@{best}"] >= m[f"mean_recall@{other}"]


def test_wds_captions_that_are_not_text_are_a_named_skipped_sample(tiny_arch, tmp_path):
    items = _items(6)
    root = make_wds_retrieval(tmp_path / "wds_caps", items, nshards=1)
    tar_path = root / "test" / "0.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for m, payload in members:
            if m.name.endswith("0001.txt"):
                payload = b"\xff\xfe not utf-8"
                m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload))
    r = api.evaluate(f"open_clip:{tiny_arch}", f"wds:{root}", output_dir=tmp_path / "out", progress=False,
                     raise_errors=True).results[0]
    assert r.evalkit["skipped"] == 1 and r.evalkit["skipped_keys"] == ["0.tar/s00001"]


def test_retrieval_over_a_labelled_dataset_fails_before_any_work(tiny_arch, tmp_path):
    from fixtures import make_wds

    from evalkit.tasks.retrieval import RetrievalFamily
    from evalkit.tasks.spec import TaskSpec

    root = make_wds(tmp_path / "wds_cls")
    spec = TaskSpec(name="r", family="retrieval", source={"type": "wds", "path": str(root)})
    with pytest.raises(DataError, match=r"has the target 0, not a list of captions"):
        RetrievalFamily().prepare(spec, None)
