"""The 27 classification datasets of EVA-CLIP-18B (arXiv 2402.04252, Table 2): task files, the
layouts users have on disk, the protocol details that change numbers, bad input, and every task
run end to end with the demo model on generated miniatures of the datasets."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_eva27 import (
    TASKS,
    VOC_OBJECTS,
    _pixels,
    build_data_root,
    cifar,
    hf_cache_entry,
    image_folder,
    names,
    objectnet,
    sun397_class_keys,
    wds,
)

from evalkit.cli import main as cli
from evalkit.cli.data import check_tasks
from evalkit.data.sources import (
    DataError,
    DatasetNotFound,
    check_task_classnames,
    class_subset_groups,
    load_source,
)
from evalkit.reporting.catalog import load_catalog
from evalkit.reporting.claims import load_claims
from evalkit.results import safe_name
from evalkit.tasks.spec import TaskIndex

REPO = Path(__file__).resolve().parents[1]
MODEL = "eva-clip-demo"
MODEL_DIR = safe_name(MODEL)
LIMIT = 6
VARIANTS = ["objectnet-imagenet-mapped", "pcam-openai", "resisc45-openai"]
INDEX = TaskIndex.load()
EVA27 = tuple(INDEX.groups["eva27"].tasks)  # Table 2's sets, as its group file lists them


def spec(task: str):
    return INDEX.tasks[task]


def load(task: str, data_root: Path, **override):
    s = spec(task)
    return load_source({**s.source, **override}, data_root, task, base_dir=Path(s.path).parent,
                       classnames=s.classnames)


def samples(data) -> list[tuple[str, object, int]]:
    return [(k, load_img, y) for u in data.units for k, load_img, y in u.samples()]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eva27data")
    return root, build_data_root(root)


@pytest.fixture(scope="module")
def e2e(data_root, tmp_path_factory):
    """One run of all 27 tasks and the 3 protocol variants, as a user would start it."""
    root, _ = data_root
    out = tmp_path_factory.mktemp("eva27out")
    rc = cli.main(["run", "--model", MODEL, "--tasks", "eva27," + ",".join(VARIANTS), "--data-root", str(root),
                   "--output-dir", str(out), "--limit", str(LIMIT), "--no-cache", "--quiet"])
    assert rc == 0
    # a --limit run: a variant of its own (never a full result's place)
    return {p.stem: json.loads(p.read_text()) for p in (out / "runs" / MODEL_DIR / f"fp32+limit{LIMIT}").glob("*.json")}, out


# -- task files --------------------------------------------------------------------------------


def test_groups_are_table2_and_table6a_under_the_claims_names():
    catalog = load_catalog()
    assert len(EVA27) == 27 and catalog.aggregate("eva27").claim == "AVG27"
    assert catalog.aggregate("eva27").tasks == EVA27 and catalog.aggregate("eva27-no-birdsnap").tasks == tuple(
        t for t in EVA27 if t != "birdsnap")
    variants = catalog.aggregate("imagenet-variants")
    assert variants.claim == "ROBUST_AVG6" and variants.tasks == tuple(INDEX.groups["imagenet-variants"].tasks)
    assert len(variants.tasks) == 6 and set(variants.tasks) <= set(EVA27)
    assert len(catalog.aggregate("basic17").tasks) == 17 and set(catalog.aggregate("basic17").tasks) <= set(EVA27)
    claims = load_claims()
    mine = claims[(claims["model"] == "eva-clip-18b") & (claims["metric"] == "acc1")]
    assert set(EVA27) <= set(mine[mine["transform"] == "best-of-both"]["task"])
    for task in EVA27 + tuple(VARIANTS):
        s = spec(task)
        assert s.family == "classification" and s.metric == "acc1"
        assert s.view["transform"] == "best-of-both"  # Table 2 is the per-dataset best of the two
        assert s.source["type"] == "any" and s.source["layouts"]


@pytest.mark.parametrize("task, n_classes, n_templates", [
    ("imagenet1k", 1000, 80), ("imagenetv2", 1000, 80), ("imagenet-a", 1000, 80), ("imagenet-r", 1000, 80),
    ("imagenet_sketch", 1000, 80), ("objectnet", None, 80), ("objectnet-imagenet-mapped", 1000, 80),
    ("cifar10", 10, 18), ("cifar100", 100, 18), ("mnist", 10, 1), ("caltech101", 102, 34), ("sun397", 397, 2),
    ("fgvc_aircraft", 100, 2), ("country211", 211, 5), ("cars", 196, 8), ("birdsnap", 500, 1), ("dtd", 47, 8),
    ("eurosat", 10, 3), ("fer2013", 7, 6), ("flowers", 102, 1), ("food101", 101, 1), ("gtsrb", 43, 3),
    ("pcam", 2, 2), ("pcam-openai", 2, 1), ("pets", 37, 1), ("renderedsst2", 2, 1), ("resisc45", 45, 4),
    ("resisc45-openai", 45, 18), ("stl10", 10, 2), ("voc2007", 20, 1),
])
def test_class_names_and_template_counts(task, n_classes, n_templates):
    s = spec(task)
    assert (len(s.classnames) if s.classnames else None) == n_classes
    assert len(s.templates) == n_templates and all("{c}" in t for t in s.templates)
    if s.classnames and n_classes != 1000:  # OpenAI's ImageNet list repeats two names ("missile", "sunglasses")
        assert len(set(s.classnames)) == len(s.classnames)


def test_template_sets_of_pcam_and_resisc45_are_named():
    assert spec("pcam").protocol["template_set"] == "clip_benchmark"
    assert spec("pcam").templates == ["a histopathology slide showing {c}", "histopathology image of {c}"]
    assert spec("pcam-openai").protocol["template_set"] == "openai"
    assert spec("pcam-openai").templates == ["this is a photo of {c}"]
    assert spec("resisc45").protocol["template_set"] == "clip_benchmark"
    assert spec("resisc45-openai").templates[0] == "satellite imagery of {c}."
    assert spec("birdsnap").templates == ["a photo of a {c}, a type of bird."]


def test_imagenet_a_and_r_score_over_their_wnid_masks():
    """IN-A/IN-R: the ImageNet classifier restricted to 200 classes, label j = the j-th wnid of the
    sorted subset list: the same label space and classifier columns as clip_benchmark's 200-name
    classifier (builder.py masks the 1000 names in sorted-wnid order)."""
    wnids = names("classnames", "imagenet1k_wnids")
    assert len(wnids) == 1000 and wnids == sorted(set(wnids))
    for sub in ("imagenet-a", "imagenet-r"):
        s = spec(sub)
        sub_wnids = names("classnames", f"{sub}_wnids")
        assert len(sub_wnids) == 200 and sub_wnids == sorted(set(sub_wnids)) and set(sub_wnids) <= set(wnids)
        groups = class_subset_groups(s.protocol, Path(s.path).parent, sub)
        assert groups == [[wnids.index(w)] for w in sub_wnids]
        assert s.classnames == spec("imagenet1k").classnames  # the classifier is ImageNet's
        # the folders of the layout are labelled in the same order as the mask
        assert s.source["layouts"][0]["class_folders_file"].endswith(f"{sub}_wnids.txt")


def test_data_files_are_attributed():
    sources = (TASKS / "SOURCES.md").read_text()
    for f in sorted((TASKS / "classnames").glob("*.txt")) + sorted((TASKS / "templates").glob("*.txt")):
        assert f"{f.parent.name}/{f.name}" in sources, f"{f} is not listed in tasks/SOURCES.md"
    notice = (REPO / "NOTICE").read_text()
    assert "CLIP_benchmark" in notice and "openai/CLIP" in notice


# -- layouts and labels ------------------------------------------------------------------------


def _label_counts(data) -> dict[int, int]:
    out: dict[int, int] = {}
    for _, _, y in samples(data):
        out[y] = out.get(y, 0) + 1
    return out


@pytest.mark.parametrize("task, per_class, layout", [
    ("cifar10", 2, "cifar"), ("cifar100", 1, "cifar"), ("mnist", 2, "mnist"), ("stl10", 1, "stl10"),
    ("cars", 1, "cars"), ("fgvc_aircraft", 1, "fgvc_aircraft"), ("dtd", 1, "dtd"), ("pets", 1, "pets"),
    ("flowers", 1, "flowers102"), ("food101", 1, "food101"), ("gtsrb", 1, "gtsrb"), ("sun397", 1, "sun397"),
    ("country211", 1, "folder"), ("eurosat", 2, "folder"), ("fer2013", 2, "folder"), ("resisc45", 1, "folder"),
    ("imagenet1k", 1, "folder"), ("imagenet_sketch", 1, "folder"),
])
def test_torchvision_and_folder_layouts_label_every_class(data_root, task, per_class, layout):
    root, counts = data_root
    data = load(task, root)
    n = len(spec(task).classnames)
    assert data.info["layout"] == layout
    assert _label_counts(data) == {c: per_class for c in range(n)}
    assert data.size == counts[task] == n * per_class
    if data.classnames_origin:  # names read from the dataset's own metadata agree with the task's
        assert check_task_classnames(spec(task).classnames, data, task) == "match"


def test_array_layouts_decode_pixels_in_the_right_orientation(data_root):
    root, _ = data_root
    for task, (h, w), pick in [("cifar10", (32, 32), 3), ("stl10", (96, 96), 7), ("mnist", (28, 28), 5)]:
        key, load_img, y = samples(load(task, root))[pick]
        got = np.asarray(load_img())
        expected = _pixels(y, pick, h, w)
        assert got.shape[:2] == (h, w), task
        assert np.array_equal(got, expected[..., 0] if task == "mnist" else expected), task


def test_imagenetv2_labels_are_the_integer_folder_names(data_root):
    root, _ = data_root
    data = load("imagenetv2", root)
    by_folder = {k.split("/")[0]: y for k, _, y in samples(data)}
    assert len(by_folder) == 1000 and all(int(f) == y for f, y in by_folder.items())
    # what a string-sorted ImageFolder would have done: folder "10" becomes class 2
    assert sorted(by_folder)[2] == "10" and by_folder["10"] == 10


def test_imagenet_a_scores_over_its_200_classes(data_root, tmp_path):
    root, _ = data_root
    data = load("imagenet-a", root)
    a_wnids = names("classnames", "imagenet-a_wnids")
    assert {k.split("/")[0]: y for k, _, y in samples(data)} == {w: i for i, w in enumerate(a_wnids)}
    bad = tmp_path / "imagenet-a"
    shutil.copytree(root / "imagenet-a", bad)
    (bad / "n99999999").mkdir()
    with pytest.raises(DataError, match=r"expected the 200 class folders.*found 201.*unexpected 1 \(e.g. n99999999\)"):
        load("imagenet-a", tmp_path)
    shutil.rmtree(bad / "n99999999")
    shutil.rmtree(bad / a_wnids[0])
    with pytest.raises(DataError, match=rf"missing 1 \(e.g. {a_wnids[0]}\)"):
        load("imagenet-a", tmp_path)


def test_objectnet_both_protocols(data_root):
    root, _ = data_root
    default = load("objectnet", root)
    assert default.classnames == [f"object {k}" for k in range(113)]  # labels lower-cased, sorted folders
    assert default.size == 113 and default.label_groups is None  # the 2 unmapped folders are left out
    img = samples(default)[0][1]()
    assert img.size == (30, 24) and img.getpixel((0, 0)) == (255, 0, 0)  # no crop: red border kept

    mapped = load("objectnet-imagenet-mapped", root)
    assert mapped.classnames is None and len(mapped.label_groups) == 113
    # "Object k" -> ImageNet names "imagenet class 5k" and "5k+1", whose 2012 ids are a permutation
    assert mapped.label_groups[:3] == [[0, 1], [5, 6], [10, 11]]
    assert mapped.info["border_crop"] == 2
    img = samples(mapped)[0][1]()
    assert img.size == (26, 20) and img.getpixel((0, 0)) != (255, 0, 0)


def test_objectnet_mapped_scores_each_class_by_its_best_imagenet_class():
    import torch

    from evalkit.tasks.classification import project_logits

    logits = torch.tensor([[1.0, 9.0, 3.0, 2.0], [5.0, 1.0, 2.0, 8.0]])
    assert project_logits(logits, [[0, 1], [2, 3]]).tolist() == [[9.0, 3.0], [5.0, 8.0]]
    assert project_logits(logits, [[3], [0, 2, 1]]).tolist() == [[2.0, 9.0], [8.0, 5.0]]
    # a one-class-per-label mask equals a classifier built from those classes alone (IN-A/IN-R)
    feats, classifier = torch.randn(16, 8), torch.randn(8, 10)
    keep = [1, 4, 7]
    masked, direct = project_logits(feats @ classifier, [[k] for k in keep]), feats @ classifier[:, keep]
    assert torch.allclose(masked, direct, atol=1e-6) and torch.equal(masked.argmax(1), direct.argmax(1))


def test_objectnet_missing_mapping_file_is_named(tmp_path):
    objectnet(tmp_path / "objectnet")
    (tmp_path / "objectnet" / "objectnet-1.0" / "mappings" / "objectnet_to_imagenet_1k.json").unlink()
    with pytest.raises(DataError, match="mapping files missing: objectnet_to_imagenet_1k.json"):
        load("objectnet", tmp_path)


def test_caltech101_whole_dataset_with_background(data_root, tmp_path):
    root, counts = data_root
    data = load("caltech101", root)
    assert data.size == counts["caltech101"] == 105 and len(_label_counts(data)) == 102
    assert {k.split("/")[0]: y for k, _, y in samples(data)}["BACKGROUND_Google"] == 0
    assert spec("caltech101").classnames[0] == "background"
    folders = ["Faces", "Faces_easy"] + [f"category_{k:03d}" for k in range(100)]
    image_folder(tmp_path / "caltech101" / "101_ObjectCategories", folders)
    with pytest.raises(DataError, match="expected a class folder 'BACKGROUND_Google'"):
        load("caltech101", tmp_path)


def test_sun397_reads_every_image_including_nested_classes(data_root):
    root, _ = data_root
    data = load("sun397", root)
    keys = sun397_class_keys()
    nested = next(i for i, k in enumerate(keys) if "/" in k)
    by_key = {"/".join(k.split("/")[1:-1]): y for k, _, y in samples(data)}
    assert len(by_key) == 397 and by_key[keys[nested]] == nested


def test_voc2007_scores_one_crop_per_object(data_root):
    root, _ = data_root
    data = load("voc2007", root)
    objects = [(i, o) for i in sorted(VOC_OBJECTS) for o in VOC_OBJECTS[i]]
    got = samples(data)
    assert len(got) == len(objects) == 7 and data.info["images"] == 4  # difficult objects included
    classes = spec("voc2007").classnames
    for (key, load_img, y), (image_id, (name, (x0, y0, x1, y1), _)) in zip(got, objects, strict=True):
        assert key.startswith(image_id) and classes[y] == name
        assert load_img().size == (x1 - x0, y1 - y0)


def test_voc2007_unknown_object_class_is_named(data_root, tmp_path):
    root, _ = data_root
    shutil.copytree(root / "voc2007", tmp_path / "voc2007")
    xml = tmp_path / "voc2007" / "VOCdevkit" / "VOC2007" / "Annotations" / "000004.xml"
    xml.write_text(xml.read_text().replace("<name>car</name>", "<name>spaceship</name>"))
    with pytest.raises(DataError, match="000004.xml: object class 'spaceship'"):
        load("voc2007", tmp_path)


def test_fer2013_has_seven_classes_from_the_kaggle_folders(data_root, tmp_path):
    root, _ = data_root
    data = load("fer2013", root)
    assert len(spec("fer2013").classnames) == 7 and set(_label_counts(data)) == set(range(7))
    image_folder(tmp_path / "fer2013" / "test", names("classnames", "fer2013_folders") + ["contempt"])
    with pytest.raises(DataError, match=r"expected the 7 class folders.*unexpected 1 \(e.g. contempt\)"):
        load("fer2013", tmp_path)


def test_birdsnap_counts_listed_images_that_were_never_downloaded(data_root, tmp_path):
    root, counts = data_root
    data = load("birdsnap", root)
    assert data.size == counts["birdsnap"] == 37
    assert data.info["listed"] == 40 and data.info["listed_missing"] == 3
    classes = spec("birdsnap").classnames
    for key, _, y in samples(data):
        assert classes[y].replace(" ", "_") == key.split("/")[0]
    shutil.copytree(root / "birdsnap", tmp_path / "birdsnap")
    listing = tmp_path / "birdsnap" / "test_images.txt"
    listing.write_text(listing.read_text() + "Dodo/0001.jpg\n")
    with pytest.raises(DataError, match=r"match none of the task's 500 class names \(e.g. Dodo\)"):
        load("birdsnap", tmp_path)


def test_class_list_in_the_wrong_order_is_caught_against_the_dataset_metadata(tmp_path):
    cifar(tmp_path / "cifar10", "cifar10")
    meta = tmp_path / "cifar10" / "cifar-10-batches-py" / "batches.meta"
    import pickle

    swapped = names("classnames", "cifar10")
    swapped[3], swapped[5] = swapped[5], swapped[3]
    meta.write_bytes(pickle.dumps({"label_names": swapped}))
    data = load("cifar10", tmp_path)
    with pytest.raises(DataError, match="class 3 is 'cat' in the task but 'dog' in the data"):
        check_task_classnames(spec("cifar10").classnames, data, "cifar10")


# -- WebDataset mirrors, Hugging Face cache, bad input --------------------------------------------


def test_wds_with_fewer_shards_than_nshards(tmp_path):
    wds(tmp_path / "wds_vtab-cifar10", list(range(10)) * 3, names("classnames", "cifar10"), nshards=3)
    (tmp_path / "wds_vtab-cifar10" / "test" / "2.tar").unlink()
    with pytest.raises(DataError, match=r"nshards.txt says 3 shards but 1 are missing \(expected 0.tar..2.tar, found 2"):
        load("cifar10", tmp_path)


def test_wds_class_count_must_match_the_task(tmp_path):
    wds(tmp_path / "wds_vtab-cifar10", list(range(9)), names("classnames", "cifar10")[:9])
    data = load("cifar10", tmp_path)
    with pytest.raises(DataError, match="task lists 10 class names but the data at .* has 9"):
        check_task_classnames(spec("cifar10").classnames, data, "cifar10")


def test_missing_dataset_names_every_folder_and_layout(tmp_path):
    with pytest.raises(DatasetNotFound) as e:
        load("cifar10", tmp_path)
    msg = str(e.value)
    for where in ("cifar10/cifar-10-batches-py", "cifar-10-batches-py", "wds_vtab-cifar10",
                  "datasets--clip-benchmark--wds_vtab-cifar10", "cifar10/test"):
        assert str(tmp_path / where) in msg
    assert "torchvision CIFAR root" in msg and "clip_benchmark WebDataset" in msg and "\n" not in msg


def test_unexpected_layout_says_what_was_expected_and_found(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"")
    with pytest.raises(DataError, match="expected test_batch, batches.meta; missing test_batch, batches.meta; "
                                        "found data_batch_1"):
        load("cifar10", tmp_path)


def test_hugging_face_cache_snapshot_is_found(tmp_path):
    repo = hf_cache_entry(tmp_path / "hub", "wds_vtab-cifar10", list(range(10)), names("classnames", "cifar10"))
    data = load("cifar10", tmp_path / "hub")
    assert data.info["layout"] == "wds" and data.info["path"] == str(repo / "snapshots" / "0123abcd")
    assert [y for _, _, y in samples(data)] == list(range(10))
    (repo / "refs" / "main").unlink()
    shutil.copytree(repo / "snapshots" / "0123abcd", repo / "snapshots" / "fedc9876", symlinks=True)
    with pytest.raises(DataError, match="2 snapshots .* and no refs/main"):
        load("cifar10", tmp_path / "hub")


def test_pcam_hdf5_layout_without_h5py_says_what_to_do(tmp_path, monkeypatch):
    pcam = tmp_path / "pcam"
    pcam.mkdir()
    for c in "xy":
        (pcam / f"camelyonpatch_level_2_split_test_{c}.h5").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as on a machine without h5py
    with pytest.raises(DataError, match="needs h5py .* or use the clip_benchmark WebDataset wds_vtab-pcam"):
        load("pcam", tmp_path)


def test_data_check_reports_found_missing_and_counts(data_root, tmp_path, capsys):
    root, counts = data_root
    rows = {r.task: r for r in check_tasks("eva27", root)}
    assert set(rows) == set(EVA27)
    for task, r in rows.items():
        assert r.status == "found" and r.samples == counts[task], task
        assert r.table11 == spec(task).protocol["table11_test_size"]
    assert rows["imagenet-a"].classes == 200 and rows["objectnet"].classes == 113
    assert rows["birdsnap"].count == "unknown" and "3 listed images not on disk" in rows["birdsnap"].message
    assert cli.main(["data", "check", "--tasks", "eva27", "--data-root", str(root)]) == 0
    assert "27/27 found" in capsys.readouterr().out
    assert cli.main(["data", "check", "--tasks", "eva27", "--data-root", str(root), "--strict"]) == 1
    capsys.readouterr()
    assert cli.main(["data", "check", "--tasks", "cifar10,voc2007", "--data-root", str(tmp_path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in out] == ["missing", "missing"]
    assert any(str(tmp_path / "voc2007") in folders for folders, _ in out[1]["looked"])


def test_a_relative_data_root_is_read_once_from_the_working_folder(data_root, monkeypatch):
    """``--data-root mini`` means ./mini: a layout's folder is not joined onto the root twice."""
    root, counts = data_root
    monkeypatch.chdir(root.parent)
    rows = {r.task: r for r in check_tasks("cifar10,dtd,imagenet1k", root.name)}
    for task, r in rows.items():
        assert r.status == "found" and r.samples == counts[task], (task, r.message)


# -- end to end with the demo model -------------------------------------------------------------

EXPECTED_LAYOUT = {
    "imagenet1k": "folder", "imagenetv2": "imagenetv2", "imagenet-a": "folder", "imagenet-r": "folder",
    "imagenet_sketch": "folder", "objectnet": "objectnet", "cifar10": "cifar", "cifar100": "cifar",
    "mnist": "mnist", "caltech101": "folder", "sun397": "sun397", "fgvc_aircraft": "fgvc_aircraft",
    "country211": "folder", "cars": "cars", "birdsnap": "birdsnap", "dtd": "dtd", "eurosat": "folder",
    "fer2013": "folder", "flowers": "flowers102", "food101": "food101", "gtsrb": "gtsrb", "pcam": "wds",
    "pets": "pets", "renderedsst2": "folder", "resisc45": "folder", "stl10": "stl10", "voc2007": "voc2007_crops",
}


def test_every_task_runs_end_to_end_with_both_transforms(e2e, data_root):
    results, _ = e2e
    _, counts = data_root
    assert set(results) == set(EVA27) | set(VARIANTS)
    for task, r in results.items():
        ev, m = r["evalkit"], r["metrics"]
        assert r["dataset"] == task and r["model"] == MODEL
        assert ev["transform"] == "best-of-both" and ev["transforms_run"] == ["crop", "squash"]
        assert ev["num_workers"] == 0  # the default for a model on the CPU
        assert m["acc1"] == max(m["acc1@crop"], m["acc1@squash"])
        assert m["acc1"] == m[f"acc1@{ev['best_transform_by_metric']['acc1']}"]
        assert ev["evaluated"] + ev["skipped"] == min(LIMIT, counts[task]) and ev["skipped"] == 0
        assert ev["data"]["layout"] == EXPECTED_LAYOUT.get(task.replace("-imagenet-mapped", "").replace("-openai", ""))
        assert ev["n_templates"] == len(spec(task).templates)
    assert results["imagenet-a"]["evalkit"]["n_classes"] == 200
    assert results["imagenet-a"]["evalkit"]["n_classifier_classes"] == 1000
    assert results["imagenet-a"]["evalkit"]["classifier_cached"]  # ImageNet's, built for imagenet1k
    assert results["objectnet"]["evalkit"]["n_classes"] == 113
    mapped = results["objectnet-imagenet-mapped"]["evalkit"]
    assert mapped["n_classes"] == 113 and mapped["n_classifier_classes"] == 1000 and mapped["data"]["border_crop"] == 2
    assert results["caltech101"]["evalkit"]["n_classes"] == 102
    assert [results[t]["evalkit"]["template_set"] for t in ("pcam", "pcam-openai", "resisc45", "resisc45-openai")] \
        == ["clip_benchmark", "openai", "clip_benchmark", "openai"]
    for task in ("cifar10", "cifar100", "sun397", "cars", "fgvc_aircraft", "dtd", "pets", "food101", "stl10"):
        assert results[task]["evalkit"]["classnames_check"] == "match", task


def test_report_puts_the_27_claims_next_to_verified_numbers(e2e, tmp_path):
    """The demo model's numbers filed under eva-clip-18b: every Table 2 claim finds its result, and
    the 27-dataset mean appears with and without Birdsnap."""
    from evalkit.reporting.report import aggregate_table, verified_table

    results, _ = e2e
    for task, r in results.items():
        if task in EVA27:
            path = tmp_path / "runs" / "eva-clip-18b" / f"{task}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            # filed as a full run's result (a --limit result is partial and never compared with a claim)
            full = {**r["evalkit"], "limit": None, "variant": "fp32"}
            path.write_text(json.dumps({**r, "model": "eva-clip-18b", "evalkit": full}))
    table = verified_table(tmp_path, model="eva-clip-18b")
    table2 = table[(table["metric"] == "acc1") & (table["transform"] == "best-of-both") & table["primary"]
                   & table["task"].isin(EVA27)]
    assert set(table2["task"]) == set(EVA27)
    assert table2["verified"].notna().all() and set(table2["status"]) <= {"reproduced", "consistent", "differs"}
    agg = aggregate_table(tmp_path, model="eva-clip-18b")
    primary = agg[agg["primary"]].set_index("group")
    assert primary.loc["eva27", "n"] == 27 and primary.loc["eva27", "claimed"] == pytest.approx(80.7)
    assert primary.loc["eva27", "verified"] == pytest.approx(np.mean([results[t]["metrics"]["acc1"] * 100 for t in EVA27]))
    assert primary.loc["eva27-no-birdsnap", "n"] == 26
    mean = np.mean([results[t]["metrics"]["acc1"] * 100 for t in EVA27 if t != "birdsnap"])
    assert primary.loc["eva27-no-birdsnap", "verified"] == pytest.approx(mean)
    # the single-transform claims (80.4) are compared with the single-transform numbers
    crop = agg[(agg["group"] == "eva27") & (agg["transform"] == "crop")].iloc[0]
    assert crop["claimed"] == pytest.approx(80.4)
    assert crop["verified"] == pytest.approx(np.mean([results[t]["metrics"]["acc1@crop"] * 100 for t in EVA27]))


def test_hugging_face_cache_and_vtab_class_order_end_to_end(tmp_path):
    hub = tmp_path / "hub"
    hf_cache_entry(hub, "wds_vtab-cifar10", list(range(10)), names("classnames", "cifar10"))
    vtab = names("classnames", "caltech101_vtab")
    hf_cache_entry(hub, "wds_vtab-caltech101", list(range(0, 102, 17)), vtab)
    out = tmp_path / "out"
    assert cli.main(["run", "--model", MODEL, "--tasks", "cifar10,caltech101", "--data-root", str(hub),
                     "--output-dir", str(out), "--transform", "crop", "--no-cache", "--quiet"]) == 0
    r = {t: json.loads((out / "runs" / MODEL_DIR / f"{t}.json").read_text())["evalkit"] for t in ("cifar10", "caltech101")}
    assert r["cifar10"]["data"]["layout"] == "wds" and r["cifar10"]["evaluated"] == 10
    assert r["cifar10"]["transform"] == "crop" and r["cifar10"]["classnames_check"] == "match"
    # the VTAB split labels Caltech-101 in another order: read with its own list, said so
    assert r["caltech101"]["classnames_check"].startswith("layout's own class list")
    assert r["caltech101"]["data"]["classnames_file"].endswith("caltech101_vtab.txt")
