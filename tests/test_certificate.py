"""Reproduction certificates (evalkit/reporting/certificate.py, `evalkit certify`) and the cached
file hashes they rest on (evalkit/filehash.py).

Every run here is the demo model (eva-clip-demo) on a 12-image ImageFolder made by the test
(``folder:`` ad-hoc task), with a copy of the demo weights, so that a test may change one byte of
a weight file, one prediction of a records file, one metric, or move files, and see the certificate
say which."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evalkit
from evalkit import filehash
from evalkit.cli.main import main
from evalkit.reporting import certificate as cert_mod
from evalkit.reporting.certificate import (
    CertificateError,
    build_certificate,
    certificate_path,
    certify,
    read_certificate,
    verify_certificate,
)
from evalkit.results import read_result

REPO = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = REPO / "evalkit" / "demo" / "weights"
MODEL = "eva-clip-demo"


def _images(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("circle", "square"):
        (folder / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")
    return folder


def _run(out: Path, data: Path, weights: Path | None) -> Path:
    torch.set_num_threads(1)
    options = {"weights": str(weights)} if weights is not None else {}
    report = evalkit.evaluate(MODEL, f"folder:{data}", output_dir=str(out), cache_dir=None, progress=False,
                              raise_errors=True, **options)
    assert report.ok and len(report.paths) == 1
    return report.paths[0]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One run with a copy of the demo weights (variant fp32+weights-…) and one with the card's own
    (the default variant), of one 12-image folder; tests copy the results folder before changing it."""
    base = tmp_path_factory.mktemp("certified")
    data = _images(base / "data")
    weights = base / "weights"
    shutil.copytree(DEMO_WEIGHTS, weights)
    out = base / "out"
    result = _run(out, data, weights)
    default = _run(out, data, None)
    return {"base": base, "data": data, "weights": weights, "out": out, "result": result, "default": default,
            "variant": read_result(result).evalkit["variant"]}


@pytest.fixture
def run(made, tmp_path):
    """The module's results folder copied for one test (its weights stay where the run had them)."""
    out = tmp_path / "out"
    shutil.copytree(made["out"], out)
    rel = made["result"].relative_to(made["out"])
    return {**made, "out": out, "result": out / rel, "default": out / made["default"].relative_to(made["out"])}


def _claims(path: Path, task: str, acc1: float) -> Path:
    path.write_text("model,task,metric,claimed,transform\n"
                    f"{MODEL},{task},acc1,{100 * acc1:.2f},crop\n"
                    f"{MODEL},{task},acc5,1.00,crop\n")
    return path


def _certify(run: dict, capsys, *extra: str) -> Path:
    rc = main(["certify", "--model", MODEL, "--variant", run["variant"], "--output-dir", str(run["out"]), "-q",
               *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    path = Path(out.splitlines()[0])
    assert path == certificate_path(run["out"], MODEL, run["variant"]) and path.is_file()
    return path


def _verify(path: Path, capsys, *extra: str) -> tuple[int, dict[str, tuple[str, str]], str]:
    """(exit code, {what: (status, line)}, stderr)."""
    rc = main(["certify", "--verify", str(path), *extra])
    captured = capsys.readouterr()
    rows = {}
    for line in captured.out.splitlines()[1:-1]:
        for status in ("unchecked", "differs", "missing", "match"):
            what, sep, _ = line.strip().partition(f"  {status}")
            if sep:
                rows[what.strip()] = (status, line)
                break
    return rc, rows, captured.err + captured.out


# ----------------------------------------------------------------------------- certify, then verify


def test_certify_then_verify_all_match(run, capsys, tmp_path):
    result = read_result(run["result"])
    task = result.dataset
    claims = _claims(tmp_path / "claims.csv", task, result.metrics["acc1"])
    path = _certify(run, capsys, "--claims", str(claims))
    cert = read_certificate(path)

    # the weights: every file of the folder, hashed independently here
    files = sorted(p for p in run["weights"].rglob("*") if p.is_file())
    assert [f["path"] for f in cert["weights"]["files"]] == [p.relative_to(run["weights"]).as_posix() for p in files]
    assert [f["sha256"] for f in cert["weights"]["files"]] == [_sha(p) for p in files]
    assert [f["size"] for f in cert["weights"]["files"]] == [p.stat().st_size for p in files]
    assert cert["weights"]["path"] == str(run["weights"]) and cert["weights"]["kind"] == "folder"
    # code and environment as the run recorded them
    ev = result.evalkit
    assert cert["code"] == {"evalkit_version": evalkit.__version__, "git_commit": ev["git_commit"],
                            "git_dirty": ev["git_dirty"]}
    assert cert["environment"] == ev["environment"] and cert["environment"]["torch"] == torch.__version__
    # the task: its files, protocol, metrics, intervals and verdicts
    (entry,) = cert["tasks"]
    assert entry["task"] == task and entry["result_file"] == run["result"].relative_to(run["out"]).as_posix()
    assert entry["result_sha256"] == _sha(run["result"])
    records = run["result"].parent / ev["records"]["files"][0]
    assert entry["records"] == [{"file": records.relative_to(run["out"]).as_posix(), "size": records.stat().st_size,
                                 "sha256": _sha(records)}]
    assert entry["records"][0]["sha256"] == ev["records"]["sha256"][0]
    assert entry["templates_sha256"] == hashlib.sha256(b'["a photo of a {c}."]').hexdigest()
    assert entry["classnames_sha256"] == hashlib.sha256(b'["circle","square"]').hexdigest()
    assert entry["view"]["transform"] == "crop" and entry["precision"] == "fp32" and entry["world_size"] == 1
    assert entry["metrics"] == result.metrics and entry["ci"] == ev["ci"]
    verdicts = {v["metric"]: v for v in entry["verdicts"]}
    assert verdicts["acc1"]["status"] == "reproduced" and verdicts["acc1"]["claimed"] == round(
        100 * result.metrics["acc1"], 2)
    assert verdicts["acc5"]["status"] != "reproduced"  # claimed 1 %, verified 100 %
    # its own hash: over the canonical JSON of the rest
    rest = {k: v for k, v in cert.items() if k != "sha256"}
    assert cert["sha256"] == hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    rc, rows, text = _verify(path, capsys)
    assert rc == 0, text
    assert {w: s for w, (s, _) in rows.items()} == {
        **{f"weights {f['path']}": "match" for f in cert["weights"]["files"]},
        f"records {entry['records'][0]['file']}": "match", f"result {entry['result_file']}": "match",
        f"data {task}": "match"}
    assert entry["data_fingerprint"]["root"][:16] in rows[f"data {task}"][1]


def test_default_variant_sits_beside_the_model_name(run, capsys):
    rc = main(["certify", "--model", MODEL, "--output-dir", str(run["out"])])
    out = capsys.readouterr().out
    assert rc == 0
    path = run["out"] / "certificates" / f"{MODEL}.json"
    assert out.splitlines()[0] == str(path)
    cert = read_certificate(path)
    assert cert["variant"] == "fp32" and cert["weights"]["path"] == str(DEMO_WEIGHTS)
    assert [t["result_file"] for t in cert["tasks"]] == [run["default"].relative_to(run["out"]).as_posix()]
    assert "1 task(s), 6 weight file(s)" in out.splitlines()[1]


def test_no_results_of_that_variant_is_a_clear_error(run, capsys):
    rc = main(["certify", "--model", MODEL, "--variant", "int8", "--output-dir", str(run["out"])])
    err = capsys.readouterr().err
    assert rc == 1 and "no results of eva-clip-demo [int8]" in err and run["variant"] in err


# ----------------------------------------------------------------------------- what a change looks like


def test_one_changed_prediction_names_its_records_file(run, capsys):
    path = _certify(run, capsys)
    records = run["result"].parent / read_result(run["result"]).evalkit["records"]["files"][0]
    with np.load(records, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["crop/pred"] = arrays["crop/pred"].copy()
    arrays["crop/pred"][3] = 1 - arrays["crop/pred"][3]
    np.savez_compressed(records, **arrays)
    rc, rows, _ = _verify(path, capsys)
    assert rc == 1
    name = f"records {records.relative_to(run['out']).as_posix()}"
    assert rows[name][0] == "differs" and str(records) in rows[name][1]
    assert [w for w, (s, _) in rows.items() if s == "differs"] == [name]


def test_one_changed_weight_byte_names_the_file(made, tmp_path, capsys):
    weights = tmp_path / "w"
    shutil.copytree(DEMO_WEIGHTS, weights)
    out = tmp_path / "out"
    variant = read_result(_run(out, made["data"], weights)).evalkit["variant"]
    path = certify(out, MODEL, variant)
    shard = weights / "model-00002-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    rc, rows, _ = _verify(path, capsys)
    assert rc == 1
    assert [w for w, (s, _) in rows.items() if s == "differs"] == ["weights model-00002-of-00003.safetensors"]
    assert str(shard) in rows["weights model-00002-of-00003.safetensors"][1]
    checks = {c.what: c for c in verify_certificate(path)}  # the API: the same rows, with where each file is
    assert checks["weights model-00002-of-00003.safetensors"].status == "differs"
    assert checks["weights model-00002-of-00003.safetensors"].path == str(shard)
    assert checks["weights config.json"].status == "match"
    # given elsewhere with --weights: the untouched copy matches
    rc, rows, _ = _verify(path, capsys, "--weights", str(made["weights"]))
    assert rc == 0 and rows["weights model-00002-of-00003.safetensors"][0] == "match"


def test_an_extra_weight_file_differs(run, capsys, tmp_path):
    path = _certify(run, capsys)
    weights = tmp_path / "w"
    shutil.copytree(run["weights"], weights)
    (weights / "extra.safetensors").write_bytes(b"\0" * 8)
    rc, rows, _ = _verify(path, capsys, "--weights", str(weights))
    assert rc == 1 and rows["weights extra.safetensors"][0] == "differs"


def test_a_changed_metric_in_a_result_names_it(run, capsys):
    path = _certify(run, capsys)
    d = json.loads(run["result"].read_text())
    d["metrics"]["acc1"] = 0.5
    run["result"].write_text(json.dumps(d, indent=2))
    rc, rows, _ = _verify(path, capsys)
    line = rows[f"result {run['result'].relative_to(run['out']).as_posix()}"]
    assert rc == 1 and line[0] == "differs" and "acc1" in line[1] and "0.5" in line[1]


def test_moved_files_verify_by_content(made, tmp_path, capsys):
    weights = tmp_path / "w"
    shutil.copytree(DEMO_WEIGHTS, weights)
    out = tmp_path / "out"
    variant = read_result(_run(out, made["data"], weights)).evalkit["variant"]
    certify(out, MODEL, variant)
    # the weights renamed into another folder, the results folder moved as a whole
    moved = tmp_path / "elsewhere" / "checkpoints"
    moved.mkdir(parents=True)
    for i, f in enumerate(sorted(weights.iterdir())):
        f.rename(moved / f"renamed-{i}{f.suffix}")
    weights.rmdir()
    shutil.move(out, tmp_path / "moved-out")
    path = certificate_path(tmp_path / "moved-out", MODEL, variant)

    rc, rows, text = _verify(path, capsys)  # nothing to search: the weights are missing, the rest matches
    assert rc == 0 and "missing" in text and "not failures" in text
    assert {s for w, (s, _) in rows.items() if w.startswith("weights ")} == {"missing"}
    assert {s for w, (s, _) in rows.items() if w.startswith(("records ", "result "))} == {"match"}

    rc, rows, text = _verify(path, capsys, "--search", str(tmp_path / "elsewhere"))
    assert rc == 0
    weights_rows = {w: line for w, (s, line) in rows.items() if w.startswith("weights ")}
    assert len(weights_rows) == 6 and all("match" in line and "moved: " in line for line in weights_rows.values())
    assert "renamed-" in weights_rows["weights config.json"]


def test_a_certificate_outside_its_results_folder_finds_them_under_search(run, capsys, tmp_path):
    path = _certify(run, capsys)
    mv = tmp_path / "mv"
    shutil.copytree(run["out"] / "runs" / MODEL, mv / "stuff")
    shutil.copy(path, mv / "cert.json")
    shutil.rmtree(run["out"])
    rc, rows, text = _verify(mv / "cert.json", capsys, "--no-data", "-q")  # nowhere to look: unchecked, said why
    files = {w: s for w, (s, _) in rows.items() if w.startswith(("records ", "result "))}
    assert rc == 0 and len(files) == 2 and set(files.values()) == {"unchecked"} and "--search" in text
    rc, rows, text = _verify(mv / "cert.json", capsys, "--no-data", "-q", "--search", str(mv / "stuff"))
    lines = {w: line for w, (s, line) in rows.items() if w.startswith(("records ", "result "))}
    assert rc == 0 and len(lines) == 2, text
    assert all(rows[w][0] == "match" and f"moved: {mv / 'stuff'}" in line for w, line in lines.items()), text
    record = next(Path(rows[w][1].split("moved: ")[1].rstrip(")")) for w in lines if w.startswith("records "))
    record.write_bytes(record.read_bytes() + b"\0")  # changed content is no longer found by content
    rc, rows, text = _verify(mv / "cert.json", capsys, "--no-data", "-q", "--search", str(mv / "stuff"))
    assert rc == 0 and {s for w, (s, _) in rows.items() if w.startswith("records ")} == {"missing"}, text


def test_a_hand_edited_certificate_fails_its_own_hash(run, capsys):
    path = _certify(run, capsys)
    cert = json.loads(path.read_text())
    cert["tasks"][0]["metrics"]["acc1"] = 0.99
    path.write_text(json.dumps(cert, indent=2))
    rc, _, text = _verify(path, capsys)
    assert rc == 1 and str(path) in text and "own hash does not match" in text
    with pytest.raises(CertificateError, match="own hash"):
        read_certificate(path)
    # not JSON at all (cut short): the same exit, a message naming the file
    path.write_text(path.read_text()[:100])
    rc, _, text = _verify(path, capsys)
    assert rc == 1 and str(path) in text and "not valid JSON" in text
    # whitespace and key order do not matter: the hash is over the canonical JSON
    good = build_certificate(run["out"], MODEL, run["variant"])
    path.write_text(json.dumps(dict(reversed(list(good.items()))), indent=7))
    assert read_certificate(path)["sha256"] == good["sha256"]


# ----------------------------------------------------------------------------- data fingerprints


def _with_fingerprint(result_path: Path, root: str | None = "ab" * 32, complete: bool = True) -> None:
    d = json.loads(result_path.read_text())
    d["evalkit"]["data_fingerprint"] = {"scheme": "evalkit-content-v1", "root": root, "samples": 12, "hashed": 12,
                                        "undecodable": 0, "duplicates": 0, "complete": complete, "from": "run"}
    result_path.write_text(json.dumps(d, indent=2))


def test_data_is_re_fingerprinted_and_compared(run, capsys, monkeypatch):
    _with_fingerprint(run["result"])
    path = _certify(run, capsys)
    task = read_certificate(path)["tasks"][0]
    seen = []

    def fake(root: str):
        def fingerprint_task(spec, data_root, progress=True):
            seen.append((spec.name, spec.source["path"], data_root))
            return {"root": root, "samples": 12, "hashed": 12, "undecodable": 0, "duplicates": 0, "complete": True}
        return lambda: fingerprint_task

    monkeypatch.setattr(cert_mod, "_fingerprint_task", fake("ab" * 32))
    rc, rows, _ = _verify(path, capsys, "--data-root", "/nowhere")
    assert rc == 0 and rows[f"data {task['task']}"][0] == "match"
    assert seen == [(task["task"], str(run["data"]), "/nowhere")]
    monkeypatch.setattr(cert_mod, "_fingerprint_task", fake("cd" * 32))
    rc, rows, _ = _verify(path, capsys)
    assert rc == 1 and rows[f"data {task['task']}"][0] == "differs" and "cdcdcdcd" in rows[f"data {task['task']}"][1]
    rc, rows, _ = _verify(path, capsys, "--no-data")
    assert rc == 0 and rows[f"data {task['task']}"][0] == "unchecked"

    def absent():
        def fingerprint_task(spec, data_root, progress=True):
            from evalkit.data.sources import DataError
            raise DataError(f"{spec.source['path']}: no such folder")
        return fingerprint_task

    monkeypatch.setattr(cert_mod, "_fingerprint_task", absent)
    rc, rows, text = _verify(path, capsys)
    assert rc == 0 and rows[f"data {task['task']}"][0] == "unchecked" and "no such folder" in text


def test_the_train_split_of_a_few_shot_task_is_bound_and_re_fingerprinted(run, capsys, monkeypatch):
    _with_fingerprint(run["result"])
    d = json.loads(run["result"].read_text())
    d["evalkit"]["train_data_fingerprint"] = {**d["evalkit"]["data_fingerprint"], "root": "ef" * 32, "samples": 40}
    run["result"].write_text(json.dumps(d, indent=2))
    path = _certify(run, capsys)
    task = read_certificate(path)["tasks"][0]
    assert task["train_data_fingerprint"]["root"] == "ef" * 32
    now = {"root": "ab" * 32, "samples": 12, "hashed": 12, "undecodable": 0, "duplicates": 0, "complete": True}

    def fingerprint_task(spec, data_root, progress=True):
        return {**now, "train": {**now, "root": train_root, "samples": 40}}

    monkeypatch.setattr(cert_mod, "_fingerprint_task", lambda: fingerprint_task)
    train_root = "ef" * 32
    rc, rows, text = _verify(path, capsys)
    assert rc == 0 and rows[f"data {task['task']}"][0] == "match", text
    assert rows[f"data {task['task']} (train)"][0] == "match", text
    train_root = "01" * 32  # one train image changed: only the train line differs
    rc, rows, text = _verify(path, capsys)
    assert rc == 1 and [w for w, (s, _) in rows.items() if s == "differs"] == [f"data {task['task']} (train)"], text
    assert "010101" in rows[f"data {task['task']} (train)"][1]
    # a task over several splits records split 1's train fingerprint only: not bound, said so
    d["evalkit"]["per_split"] = [{"split": "a"}, {"split": "b"}]
    run["result"].write_text(json.dumps(d, indent=2))
    cert = build_certificate(run["out"], MODEL, run["variant"])
    assert cert["tasks"][0]["train_data_fingerprint"] is None
    assert any("split 1 of 2 only" in w for w in cert["warnings"])


def test_one_changed_image_makes_the_data_differ(made, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(made["data"], data)
    out = tmp_path / "out"
    _run(out, data, None)
    path = certify(out, MODEL)
    task = read_certificate(path)["tasks"][0]["task"]
    rc, rows, _ = _verify(path, capsys)
    assert rc == 0 and rows[f"data {task}"][0] == "match"
    image = data / "square" / "3.png"
    pixels = np.array(Image.open(image))
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(image)
    rc, rows, _ = _verify(path, capsys)
    assert rc == 1 and [w for w, (s, _) in rows.items() if s != "match"] == [f"data {task}"]
    assert rows[f"data {task}"][0] == "differs"


def test_results_without_fingerprints_or_environment_are_warned_about(run, capsys):
    d = json.loads(run["result"].read_text())
    for key in ("environment", "data_fingerprint", "templates_sha256"):
        d["evalkit"].pop(key, None)
    run["result"].write_text(json.dumps(d, indent=2))
    rc = main(["certify", "--model", MODEL, "--variant", run["variant"], "--output-dir", str(run["out"])])
    captured = capsys.readouterr()
    assert rc == 0
    assert "no data fingerprint" in captured.err and "no environment recorded" in captured.err
    assert "templates and class names used are not recorded" in captured.err
    cert = read_certificate(Path(captured.out.splitlines()[0]))
    assert cert["environment"] == {"python": d["evalkit"]["python"], "torch": d["evalkit"]["torch"]}
    assert cert["tasks"][0]["data_fingerprint"] is None and len(cert["warnings"]) == 3
    rc, rows, _ = _verify(Path(captured.out.splitlines()[0]), capsys)
    assert rc == 0 and rows[f"data {cert['tasks'][0]['task']}"][0] == "unchecked"


def test_results_of_one_run_that_disagree_are_said(run, capsys):
    other = run["result"].with_name("second.json")
    d = json.loads(run["result"].read_text())
    d["dataset"] = "second"
    d["evalkit"]["environment"] = {**d["evalkit"]["environment"], "torch": "0.0-other"}
    d["evalkit"]["git_commit"] = "0123456789ab"
    other.write_text(json.dumps(d, indent=2))
    cert = build_certificate(run["out"], MODEL, run["variant"])
    said = "\n".join(cert["warnings"])
    folder, first, second = other.parent.relative_to(run["out"]).as_posix(), run["result"].name, other.name
    env = next(w for w in cert["warnings"] if w.startswith("environment differs"))
    torch_now = json.loads(run["result"].read_text())["evalkit"]["environment"]["torch"]
    assert env == (f"environment differs between results in {folder}: torch ({torch_now} in {first}; "
                   f"0.0-other in {second})")
    commit = json.loads(run["result"].read_text())["evalkit"]["git_commit"]
    assert f"git_commit differs between results in {folder}: {commit} in {first}; 0123456789ab in {second}" in said
    assert len(cert["tasks"]) == 2


def test_a_result_without_environment_names_the_fields_and_files_on_one_short_line(run):
    other = run["result"].with_name("second.json")
    d = json.loads(run["result"].read_text())
    d["dataset"] = "second"
    env = d["evalkit"].pop("environment")
    other.write_text(json.dumps(d, indent=2))
    said = [w for w in build_certificate(run["out"], MODEL, run["variant"])["warnings"]
            if w.startswith("environment differs")]
    folder = other.parent.relative_to(run["out"]).as_posix()
    fields = ", ".join(sorted(k for k in env if k not in ("python", "torch")))  # the old result records those two
    assert said == [f"environment differs between results in {folder}: missing in {other.name}: {fields}"], said


# ----------------------------------------------------------------------------- the hash cache


def test_a_second_certify_reads_no_weight_file_again(run, monkeypatch):
    reads: list[str] = []
    real = filehash._stream_sha256
    monkeypatch.setattr(filehash, "_stream_sha256", lambda p, *a: reads.append(p.name) or real(p, *a))
    certify(run["out"], MODEL, run["variant"])
    weight_names = {p.name for p in run["weights"].iterdir()}
    assert weight_names <= set(reads)
    reads.clear()
    certify(run["out"], MODEL, run["variant"])
    assert not weight_names & set(reads)


def test_the_cache_rehashes_a_changed_file(tmp_path, monkeypatch):
    reads: list[Path] = []
    real = filehash._stream_sha256
    monkeypatch.setattr(filehash, "_stream_sha256", lambda p, *a: reads.append(p) or real(p, *a))
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(3 * filehash.CHUNK + 17))  # several chunks and a tail
    want = _sha(f)
    assert filehash.file_sha256(f) == want and len(reads) == 1
    assert filehash.file_sha256(f) == want and len(reads) == 1  # cached
    assert filehash.file_sha256(tmp_path / "." / "big.bin") == want and len(reads) == 1  # the same file
    # the same size, another mtime: read again (and the same bytes give the same digest)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert filehash.file_sha256(f) == want and len(reads) == 2
    # one byte changed in place with the old mtime put back: size and mtime equal, ctime not
    st = f.stat()
    with open(f, "r+b") as h:
        h.seek(5)
        h.write(b"\xff" if h.read(1) != b"\xff" else b"\x00")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert filehash.file_sha256(f) == _sha(f) != want and len(reads) == 3
    # grown
    with open(f, "ab") as h:
        h.write(b"x")
    assert filehash.file_sha256(f) == _sha(f) and len(reads) == 4
    # a corrupt entry is passed over, not trusted
    for entry in filehash.cache_folder().iterdir():
        entry.write_text("{not json")
    assert filehash.file_sha256(f) == _sha(f) and len(reads) == 5
    # cache=False: always read
    filehash.file_sha256(f, cache=False)
    assert len(reads) == 6


def test_the_cache_lives_in_the_evalkit_cache_folder(tmp_path):
    from evalkit.features.cache import default_cache_dir

    assert filehash.cache_folder() == default_cache_dir() / "filehash" == tmp_path / "cache" / "filehash"
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    filehash.file_sha256(f)
    (entry,) = filehash.cache_folder().iterdir()
    assert json.loads(entry.read_text())["sha256"] == _sha(f)


def test_concurrent_hashing_of_one_file_agrees(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(filehash.CHUNK + 5))
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(filehash.file_sha256(f))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [_sha(f)] * 8
    assert len(list(filehash.cache_folder().iterdir())) == 1  # one entry, no temporary file left


def test_a_hub_snapshot_is_hashed_by_content_under_its_own_names(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    repo = hub / "models--org--clip"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee\n")
    snap = repo / "snapshots" / "c0ffee"
    (snap / "sub").mkdir(parents=True)
    for name, content in (("model.safetensors", b"tensor bytes"), ("sub/config.json", b"{}")):
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snap / name).symlink_to(os.path.relpath(blob, (snap / name).parent))
    (snap / ".gitattributes").write_text("hidden: left out\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert cert_mod.local_weights("hf://org/clip@c0ffee") == snap
    assert cert_mod.local_weights("hf://org/clip") == snap  # refs/main
    assert cert_mod.local_weights("hf://org/clip@c0ffee/model.safetensors") == snap / "model.safetensors"
    assert cert_mod.local_weights("hf://org/other@c0ffee") is None and cert_mod.local_weights("openai") is None
    hashed = filehash.hash_tree(snap)
    assert [(h.path, h.size, h.sha256) for h in hashed] == [
        ("model.safetensors", 12, hashlib.sha256(b"tensor bytes").hexdigest()),
        ("sub/config.json", 2, hashlib.sha256(b"{}").hexdigest())]


def test_weights_that_are_no_local_path_are_unchecked_not_failed(run, capsys):
    d = json.loads(run["result"].read_text())
    d["evalkit"]["weights"] = "openai"
    run["result"].write_text(json.dumps(d, indent=2))
    path = _certify(run, capsys)
    assert read_certificate(path)["weights"]["files"] == []
    rc, rows, _ = _verify(path, capsys)
    assert rc == 0 and rows["weights"][0] == "unchecked"
