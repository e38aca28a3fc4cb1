"""The entry-point plugin path with a real installed distribution (not a mock).

A tiny package and its ``.dist-info`` (METADATA, entry_points.txt, RECORD) are written to a folder
that a subprocess gets on PYTHONPATH, exactly as pip would leave an installed plugin in
site-packages; ``python -m evalkit`` must then list and use its task family and model loader.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

from fixtures import make_wds

from evalkit.tasks.spec import adhoc_name

PLUGIN = textwrap.dedent('''
    """evalkit_plugin_demo: a third-party package adding a task family and a model loader."""
    from evalkit.results import TaskResult

    WEIGHTS_TAG = "evalkit_plugin_demo-0.1"


    class CountFamily:
        name = "plugin-count"

        def validate(self, spec):
            if not spec.classnames:
                raise ValueError(f"{spec.path}: plugin-count needs classnames")

        def run(self, spec, encoder, ctx):
            from evalkit.features.embed import encode_texts

            feats = encode_texts(encoder, [t.format(c=c) for c in spec.classnames for t in spec.templates])
            return TaskResult(
                dataset=spec.name, model=encoder.name, pretrained=encoder.weights, task="plugin_count",
                metrics={"n_prompts": float(feats.shape[0])},
                evalkit={"family": self.name, "plugin_module": __name__, "embed_dim": int(feats.shape[1])},
            )


    def load_model(name, weights=None, precision="fp32", device="cpu"):
        from evalkit import models
        enc = models.load("eva-clip-demo", precision=precision, device=device)
        enc.name, enc.weights = name, WEIGHTS_TAG
        return enc
''')

ENTRY_POINTS = textwrap.dedent("""
    [evalkit.task_families]
    plugin-count = evalkit_plugin_demo:CountFamily

    [evalkit.models]
    plugin-demo-model = evalkit_plugin_demo:load_model
""")


def _install(site: Path) -> None:
    """What `pip install` of a wheel leaves in site-packages: the package and its dist-info."""
    pkg = site / "evalkit_plugin_demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN)
    info = site / "evalkit_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evalkit-plugin-demo\nVersion: 0.1\n"
                                   "Requires-Dist: evalkit\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS.lstrip())
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("".join(f"{p},,\n" for p in (
        "evalkit_plugin_demo/__init__.py", "evalkit_plugin_demo-0.1.dist-info/METADATA",
        "evalkit_plugin_demo-0.1.dist-info/entry_points.txt", "evalkit_plugin_demo-0.1.dist-info/INSTALLER",
        "evalkit_plugin_demo-0.1.dist-info/RECORD")))


def _evalkit(args: list[str], cwd: Path, site: Path | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_installed_plugin_is_listed_and_used_by_run(tmp_path):
    site = tmp_path / "site-packages"
    _install(site)

    families = _evalkit(["list", "families"], tmp_path, site)
    assert families.returncode == 0, families.stderr
    assert {"classification", "plugin-count"} <= set(families.stdout.split()), families.stdout
    # the control: this process, without the distribution on its path, has no such entry point
    assert "plugin-count" not in {ep.name for ep in metadata.entry_points(group="evalkit.task_families")}

    listed = _evalkit(["list", "models"], tmp_path, site)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1:] for line in listed.stdout.splitlines() if line.strip()}
    assert rows.get("plugin-demo-model") == ["plugin"], listed.stdout

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "plugin-words.yaml").write_text(textwrap.dedent("""
        task: plugin-words
        family: plugin-count
        source: {type: none}
        classnames: [cat, dog, bird]
        templates: ["a photo of a {c}.", "a {c}."]
    """))
    wds = make_wds(tmp_path / "wds", n_per_class=2, nshards=2)
    out = tmp_path / "out"
    run = _evalkit(["run", "--model", "plugin-demo-model", "--tasks", f"plugin-words,wds:{wds}", "--task-dir",
                    str(tasks), "--output-dir", str(out), "--quiet", "--no-cache"], tmp_path, site)
    assert run.returncode == 0, run.stdout + run.stderr
    words = json.loads((out / "runs" / "plugin-demo-model" / "plugin-words.json").read_text())
    assert words["task"] == "plugin_count" and words["model"] == "plugin-demo-model"
    assert words["metrics"] == {"n_prompts": 3 * 2}
    assert words["evalkit"]["family"] == "plugin-count"
    assert words["evalkit"]["plugin_module"] == "evalkit_plugin_demo"
    assert words["pretrained"] == "evalkit_plugin_demo-0.1"  # the plugin's model loader built the encoder
    # the plugin model through a built-in family
    cls = json.loads((out / "runs" / "plugin-demo-model" / f"{adhoc_name(f'wds:{wds}')}.json").read_text())
    assert cls["pretrained"] == "evalkit_plugin_demo-0.1" and cls["evalkit"]["family"] == "classification"
    assert cls["evalkit"]["evaluated"] == 12 and 0 <= cls["metrics"]["acc1"] <= 1
