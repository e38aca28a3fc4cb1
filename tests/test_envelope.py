"""The protocol envelope (issue 18, item 6): a finished demo run re-scored from its cached image
features under other templates, class names and transforms, with no image forward pass.

One demo task of its own (``envshape``: ShapeWorld shapes, 120 images, an ``envelope:`` block
with a template file and two class-name files) is run once into a temporary results folder and
feature cache; the envelope is then checked against the result (exactly) and against scores
computed here by hand from the same cached features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evalkit import api
from evalkit.cli import main as cli
from evalkit.data.sources import SourceData
from evalkit.features.cache import FeatureCache
from evalkit.features.embed import embed
from evalkit.models import load
from evalkit.models.encoder import Encoder
from evalkit.reporting import envelope as env_mod
from evalkit.reporting.envelope import INSIDE, OUTSIDE, OWN, SINGLE_PROMPT, envelope, text_sets
from evalkit.results import iter_results, read_result, result_path
from evalkit.tasks.classification import ClassificationFamily
from evalkit.tasks.common import task_view
from evalkit.tasks.spec import TaskIndex, TaskSpecError

REPO = Path(__file__).resolve().parents[1]
MODEL = "eva-clip-demo"
SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]  # the demo's label order
ALT_NAMES = ["round disc", "box", "three-cornered shape", "five-pointed star", "rhombus", "plus sign"]
# classInd-like lines: an index, then the name, in another order than the labels' (order: by_name)
INDEXED = ["1 Star", "2 Cross", "3 Circle", "4 Diamond", "5 Square", "6 Triangle"]


def _task_dir(root: Path, n: int = 120, **extra: str) -> Path:
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "alt_templates.txt").write_text("a picture of a {c}.\nan illustration of a {c}.\n")
    (tasks / "alt_names.txt").write_text("\n".join(ALT_NAMES) + "\n")
    (tasks / "indexed_names.txt").write_text("\n".join(INDEXED) + "\n")
    block = extra.get("envelope", """envelope:
  templates_files: [alt_templates.txt]
  classnames_files:
    - alt_names.txt
    - {file: indexed_names.txt, column: 2, order: by_name}
""")
    (tasks / f"{extra.get('name', 'envshape')}.yaml").write_text(
        f"include: {REPO / 'tasks' / 'demo' / 'shapeworld-shape.yaml'}\n"
        f"task: {extra.get('name', 'envshape')}\nsource: {{n: {n}}}\n" + block)
    return tasks


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """envshape run once (crop): its task folder, results folder, feature cache and result."""
    root = tmp_path_factory.mktemp("envelope")
    tasks = _task_dir(root)
    out, cache = root / "out", root / "cache"
    report = api.evaluate(MODEL, "envshape", task_dirs=[tasks], output_dir=out, cache_dir=cache, raise_errors=True,
                          progress=False)
    return {"root": root, "tasks": tasks, "out": out, "cache": cache, "result": report.results[0]}


def _envelope(run, **kw):
    kw.setdefault("claims", [])
    return envelope(MODEL, "envshape", task_dirs=[run["tasks"]], output_dir=run["out"], cache_dir=run["cache"], **kw)


@pytest.fixture
def no_image_forward(monkeypatch):
    """Any image (or point) forward pass raises; the text tower's forward passes are counted."""
    def refuse(self, modality, batch):
        raise AssertionError(f"an image forward pass ({modality}) in the envelope")

    calls = {"text": 0}

    def counting(method):
        def counted(self, *args):
            calls["text"] += 1
            return method(self, *args)
        return counted

    monkeypatch.setattr(Encoder, "encode", refuse)
    for name in ("encode_text", "encode_text_prefixes", "encode_text_suffix"):
        monkeypatch.setattr(Encoder, name, counting(getattr(Encoder, name)))
    return calls


def _cell(env, templates: str, classnames: str, transform: str):
    found = [v for v in env.variants if v.templates.startswith(templates) and v.classnames.startswith(classnames)
             and v.transform == transform]
    assert len(found) == 1, [(v.templates, v.classnames, v.transform) for v in env.variants]
    return found[0]


def test_own_protocol_equals_the_result_with_no_image_forward_pass(demo_run, no_image_forward):
    report = _envelope(demo_run, write=False)
    assert report.failures == [] and len(report.envelopes) == 1
    env = report.envelopes[0]
    result = demo_run["result"]
    assert env.own_value == result.metrics["acc1"]  # exactly: the same features, classifier and metric
    assert env.own.transform == "crop" and env.own.metrics == result.metrics
    assert no_image_forward["text"] > 0  # the new classifiers' prompts were encoded (text only)
    # templates x class names: own, the file, the single prompt x own, two files; crop only (cached)
    assert len(env.template_sets) == 3 and len(env.classname_sets) == 3 and len(env.variants) == 9
    assert env.range() == (min(v.value("acc1") for v in env.variants), max(v.value("acc1") for v in env.variants))
    # a second call encodes nothing: every classifier comes from the feature cache
    no_image_forward["text"] = 0
    again = _envelope(demo_run, write=False).envelopes[0]
    assert no_image_forward["text"] == 0 and again.classifiers_cached == again.classifiers == 9
    assert [v.metrics for v in again.variants] == [v.metrics for v in env.variants]


def _hand_scored(run, names: list[str], templates: list[str]) -> float:
    """acc1 of the crop features (read back through embed, every unit cached) under a classifier
    built here: per class, each template encoded, L2-normalised, averaged, renormalised."""
    encoder = load(MODEL)
    spec = TaskIndex.load(extra=[run["tasks"]]).lookup("envshape")
    family = ClassificationFamily()
    prepared = family.prepare(spec, None)
    views = task_view(spec, family).resolve(encoder).build(encoder)
    emb = embed(encoder, prepared.data, views, cache=FeatureCache(run["cache"]), progress=False)["crop"]
    rows = []
    for c in names:
        t = encoder.encode_text(encoder.tokenize([tpl.format(c=c) for tpl in templates]))
        t = t / t.norm(dim=-1, keepdim=True)
        m = t.mean(dim=0)
        rows.append(m / m.norm())
    classifier = torch.stack(rows)
    pred = (emb.features @ classifier.T).argmax(dim=1)
    labels = torch.tensor(emb.labels)
    return int((pred == labels).sum()) / len(labels)


def test_variants_equal_scores_computed_by_hand(demo_run, no_image_forward):
    env = _envelope(demo_run, write=False).envelopes[0]
    single = _cell(env, "single prompt", "the data's own", "crop")
    assert SINGLE_PROMPT == "a photo of a {c}."
    assert single.value("acc1") == _hand_scored(demo_run, SHAPES, ["a photo of a {c}."])
    # the indexed file's names, put in label order by name (column 2, order: by_name)
    indexed = _cell(env, "single prompt", "indexed_names.txt", "crop")
    in_label_order = [n.split(" ", 1)[1] for n in sorted(INDEXED, key=lambda ln: SHAPES.index(ln.split()[1].lower()))]
    assert indexed.value("acc1") == _hand_scored(demo_run, in_label_order, ["a photo of a {c}."])
    alt = _cell(env, "alt_templates.txt", "alt_names.txt", "crop")
    assert alt.value("acc1") == _hand_scored(demo_run, ALT_NAMES, ["a picture of a {c}.", "an illustration of a {c}."])


def _claims_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("model,task,metric,claimed,transform,protocol\n"
                    + "".join(f"{MODEL},envshape,acc1,{c},{t},{p}\n" for c, t, p in rows))
    return path


def test_claims_inside_and_outside_the_range(demo_run, tmp_path):
    lo, hi = _envelope(demo_run, write=False).envelopes[0].range()
    just_above = float(f"{100 * hi + 0.004:.2f}")  # above the range by less than its rounding (±0.005)
    assert 100 * hi < just_above < 100 * hi + 0.005
    far_below = float(f"{100 * lo - 3:.1f}")
    own = _envelope(demo_run, write=False).envelopes[0].own_value
    claims = _claims_csv(tmp_path / "claims.csv", [(f"{100 * lo:.1f}", "crop", ""), (str(just_above), "", ""),
                                                   (str(far_below), "best-of-both", ""), ("99.9", "crop", "8frames"),
                                                   (f"{100 * own:.2f}", "crop", "reported")])
    checks = _envelope(demo_run, write=False, claims=[claims]).envelopes[0].claims
    assert [c.inside for c in checks] == [True, True, False, None, True]
    for check in checks[:2]:  # inside: a protocol choice explains the gap, unless the run's own prints as the claim
        printed_as_own = abs(100 * own - check.claimed) <= 0.5 * 10 ** -len(str(check.claimed).split(".")[1])
        assert (OWN if printed_as_own else INSIDE) in check.verdict
    assert OWN in checks[4].verdict and INSIDE not in checks[4].verdict  # the run's own value: no gap
    assert OUTSIDE in checks[2].verdict and INSIDE not in checks[2].verdict
    assert "not this run's protocol" in checks[3].verdict and checks[3].low is None
    assert (checks[2].low, checks[2].high) == (100 * lo, 100 * hi)


def test_an_uncached_transform_is_listed_with_the_run_that_caches_it(demo_run, tmp_path, no_image_forward):
    env = _envelope(demo_run, write=False).envelopes[0]
    assert env.transforms == ("crop", "squash", "best-of-both")
    assert {v.transform for v in env.variants} == {"crop"}
    hint = env.not_cached["squash"]
    assert hint.startswith("not cached: run `evalkit run --model eva-clip-demo --tasks envshape --transform squash")
    assert "squash" in env.not_cached["best-of-both"]
    assert "squash: not cached: run `evalkit run" in env.format()


def test_best_of_both_once_both_transforms_are_cached(demo_run, tmp_path):
    out = tmp_path / "squash"
    report = api.evaluate(MODEL, "envshape", task_dirs=[demo_run["tasks"]], output_dir=out,
                          cache_dir=demo_run["cache"], transform="squash", raise_errors=True, progress=False)
    env = envelope(MODEL, "envshape", task_dirs=[demo_run["tasks"]], output_dir=out, cache_dir=demo_run["cache"],
                   claims=[], write=False).envelopes[0]
    assert env.not_cached == {}
    assert env.own.transform == "squash" and env.own_value == report.results[0].metrics["acc1"]
    crop = _cell(env, "the task's own", "the data's own", "crop")
    assert crop.value("acc1") == demo_run["result"].metrics["acc1"]  # the crop run's own number
    for v in env.variants:
        if v.transform == "best-of-both":
            parts = [_cell(env, v.templates, v.classnames, m).metrics for m in ("crop", "squash")]
            assert v.metrics["acc1"] == max(p["acc1"] for p in parts)
            assert v.metrics["acc1@crop"] == parts[0]["acc1"] and v.metrics["acc1@squash"] == parts[1]["acc1"]
    assert len(env.variants) == 27


def test_limit_runs_splits_and_shared_images_score_as_their_results(demo_run, tmp_path):
    """A --limit run (its own cache keys; claims partial), a task of two splits (each metric the
    mean over them) and a task labelling the same images otherwise (colours: the shape run's
    features, its own labels): the own protocol equals each result exactly."""
    tasks = demo_run["tasks"]
    extra = _task_dir(tmp_path / "more", name="envsplits", envelope="protocol:\n  splits: [{seed: 7}, {seed: 8}]\n")
    (extra / "envcolour.yaml").write_text(
        f"include: {REPO / 'tasks' / 'demo' / 'shapeworld-colour.yaml'}\ntask: envcolour\nsource: {{n: 120}}\n")
    (extra / "envsplits.yaml").write_text((extra / "envsplits.yaml").read_text().replace("n: 120", "n: 40"))
    out = tmp_path / "out"
    kw = dict(output_dir=out, cache_dir=demo_run["cache"], raise_errors=True, progress=False)
    limited = api.evaluate(MODEL, "envshape", task_dirs=[tasks], limit=50, **kw).results[0]
    others = api.evaluate(MODEL, "envcolour,envsplits", task_dirs=[extra], **kw).results
    assert others[0].evalkit["samples_per_rank"] == [0]  # the colours: the shape run's features, none encoded
    claims = _claims_csv(tmp_path / "claims.csv", [("50.0", "crop", "")])
    env = envelope(MODEL, "envshape", task_dirs=[tasks], claims=[claims], output_dir=out,
                   cache_dir=demo_run["cache"]).envelopes[0]
    assert env.limit == 50 and env.samples == 50 and env.run == "fp32+limit50"
    assert env.own_value == limited.metrics["acc1"]
    assert env.claims[0].inside is None and env.claims[0].verdict.startswith("partial: a --limit 50 run")
    for result in others:
        got = envelope(MODEL, result.dataset, task_dirs=[extra], output_dir=out, cache_dir=demo_run["cache"],
                       claims=[]).envelopes[0]
        assert got.own.metrics == result.metrics and got.own_value == result.metrics["acc1"], result.dataset
    assert "acc1@split2" in others[1].metrics and others[1].evalkit["evaluated"] == 80


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["envelope", "--model", MODEL, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_json_and_the_file_beside_the_result(demo_run, capsys):
    rc, out, err = _cli(capsys, "--tasks", "envshape", "--task-dir", str(demo_run["tasks"]), "--output-dir",
                        str(demo_run["out"]), "--cache-dir", str(demo_run["cache"]), "--json")
    assert rc == 0, err
    printed = json.loads(out)["envelopes"][0]
    path = result_path(demo_run["out"], MODEL, "envshape", ".envelope.json")
    assert json.loads(path.read_text()) == printed
    assert printed["own"]["value"] == printed["result_value"] == demo_run["result"].metrics["acc1"]
    assert printed["own_matches_result"] is True
    assert printed["range"] == [min(v["value"] for v in printed["variants"]),
                                max(v["value"] for v in printed["variants"])]
    # the envelope file is no result: the results folder still reads as one result
    assert [r.dataset for r in iter_results(demo_run["out"])] == ["envshape"]
    assert read_result(result_path(demo_run["out"], MODEL, "envshape")).metrics == demo_run["result"].metrics
    rc, text, _ = _cli(capsys, "--tasks", "envshape", "--task-dir", str(demo_run["tasks"]), "--output-dir",
                       str(demo_run["out"]), "--cache-dir", str(demo_run["cache"]), "--quiet")
    assert rc == 0 and "range [" in text and "single prompt" in text


def test_a_task_never_run_is_one_line_naming_the_run_command(demo_run, tmp_path, capsys):
    rc, out, err = _cli(capsys, "--tasks", "envshape", "--task-dir", str(demo_run["tasks"]), "--output-dir",
                        str(tmp_path / "empty"), "--cache-dir", str(demo_run["cache"]))
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evalkit: error: envshape: no result of eva-clip-demo")
    assert f"`evalkit run --model eva-clip-demo --tasks envshape --output-dir {tmp_path / 'empty'}" in lines[0]


def test_no_cached_features_is_one_line_naming_the_run_command(demo_run, tmp_path, capsys, no_image_forward):
    empty = tmp_path / "other-cache"
    rc, out, err = _cli(capsys, "--tasks", "envshape", "--task-dir", str(demo_run["tasks"]), "--output-dir",
                        str(demo_run["out"]), "--cache-dir", str(empty))
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "envshape: no cached features of eva-clip-demo" in lines[0]
    assert f"--transform crop --output-dir {demo_run['out']} --cache-dir {empty} --task-dir" in lines[0]


def test_a_result_of_other_weights_is_refused(demo_run, tmp_path, capsys):
    out = tmp_path / "out"
    path = result_path(out, MODEL, "envshape")
    path.parent.mkdir(parents=True)
    doc = json.loads(result_path(demo_run["out"], MODEL, "envshape").read_text())
    doc["evalkit"]["fingerprint"] = "0123456789abcdef"  # as if other weights had produced it
    path.write_text(json.dumps(doc))
    rc, out_text, err = _cli(capsys, "--tasks", "envshape", "--task-dir", str(demo_run["tasks"]), "--output-dir",
                             str(out), "--cache-dir", str(demo_run["cache"]))
    assert rc == 2 and out_text == ""
    assert "envshape: the model loaded" in err and "fingerprint 0123456789abcdef" in err and "--weights" in err


def test_a_family_without_an_envelope_is_said(demo_run, capsys):
    rc, out, err = _cli(capsys, "--tasks", "shapeworld-retrieval", "--output-dir", str(demo_run["out"]),
                        "--cache-dir", str(demo_run["cache"]))
    assert "shapeworld-retrieval: no envelope for this family (retrieval)" in out
    assert rc == 2 and "none of the tasks has an envelope" in err


def test_a_class_name_set_of_another_length_names_its_file(demo_run, tmp_path, capsys):
    # the task names its classes: the file is checked before any result, data or weights are read
    tasks = _task_dir(tmp_path, name="envshort", envelope=f"classnames: {SHAPES}\nenvelope:\n  classnames_files: "
                                                           f"[alt_names.txt, short.txt]\n")
    (tasks / "short.txt").write_text("\n".join(SHAPES[:5]) + "\n")
    with pytest.raises(TaskSpecError, match=r"envshort.yaml: envelope.classnames_files\[1\]: .*short.txt has 5 class "
                                            r"names, the task has 6 classes"):
        envelope(MODEL, "envshort", task_dirs=[tasks], output_dir=tmp_path, cache_dir=demo_run["cache"], claims=[])
    rc, _, err = _cli(capsys, "--tasks", "envshort", "--task-dir", str(tasks), "--output-dir", str(tmp_path))
    assert rc == 1 and "short.txt has 5 class names, the task has 6 classes" in err
    # the task's names come from the data: the same check once the data has named them
    named_by_data = _task_dir(tmp_path / "data", name="envdata",
                              envelope=f"envelope:\n  classnames_files: [alt_names.txt, {tasks / 'short.txt'}]\n")
    spec = TaskIndex.load(extra=[named_by_data]).lookup("envdata")
    prepared = ClassificationFamily().prepare(spec, None)
    assert prepared.classnames == SHAPES
    with pytest.raises(TaskSpecError, match=r"envdata.yaml: envelope.classnames_files\[1\]: .*short.txt has 5 class "
                                            r"names, the task has 6 classes"):
        text_sets(spec, None, prepared, [])


def test_the_shipped_envelope_blocks_read(tmp_path):
    """Every task file's envelope block names files that exist, templates with {c}, and class-name
    sets of the task's class count (UCF-101's folder names matched to its classes by name)."""
    index = TaskIndex.load()
    with_block = {name: spec for name, spec in index.tasks.items() if spec.envelope}
    assert {"pcam", "pcam-openai", "resisc45", "eurosat", "fer2013", "ucf101"} <= set(with_block)
    for spec in with_block.values():
        prepared = type("Prepared", (), {"templates": spec.templates, "classnames": spec.classnames,
                                         "data": SourceData([], None)})()
        templates, names = text_sets(spec, None, prepared, [])
        files_t = spec.envelope.get("templates_files", [])
        files_c = [e if isinstance(e, str) else e["file"] for e in spec.envelope.get("classnames_files", [])]
        # where a kind has files, the task's own set is one of them: it names the own row, adds none
        assert len(templates) == max(len(files_t), 1) + 1 and templates[-1].items == (SINGLE_PROMPT,), spec.name
        assert len(names) == max(len(files_c), 1), spec.name
        for sets, files in ((templates, files_t), (names, files_c)):
            assert not files or sets[0].label.split(" (")[0] in {Path(f).name for f in files}, spec.name
        assert templates[0].items == tuple(spec.templates) and names[0].items == tuple(spec.classnames)
        assert all(len(n.items) == len(spec.classnames) for n in names)
    ucf = dict((n.label, n.items) for n in text_sets(with_block["ucf101"], None, type("P", (), {
        "templates": with_block["ucf101"].templates, "classnames": with_block["ucf101"].classnames,
        "data": SourceData([], None)})(), [])[1])
    folders = ucf["ucf101_folders.txt (101)"]
    own = with_block["ucf101"].classnames
    assert [env_mod.normalise_name(f) for f in folders] == [env_mod.normalise_name(c) for c in own]
    assert folders != tuple(own) and "ApplyEyeMakeup" in folders
