"""Signs of life and other tools' habits (issue 16 §4): every long phase shows progress, as bars
on a terminal and as lines in a log (through the CLI and the Python API); flags brought from
clip_benchmark and lm-evaluation-harness get a one-line hint."""

from __future__ import annotations

import io

import pytest
from fixtures import CLASSNAMES, FakeClock, make_wds

from evalkit.cli import main as cli
from evalkit.progress import LineProgress, NoProgress, progress_bar


def test_line_progress_is_quiet_for_short_phases_then_a_line_every_interval():
    out, clock = io.StringIO(), FakeClock()
    short = LineProgress(10, "short", "img", out, first=2, every=30, clock=clock)
    short.update(10)
    clock.now = 1.0
    short.close()
    assert out.getvalue() == ""  # under 2 s: nothing to say
    out, clock = io.StringIO(), FakeClock()
    bar = LineProgress(1000, "imagenet: classifier", "prompts", out, first=2, every=30, clock=clock)
    for t in range(1, 71):  # 70 s, 10 prompts a second
        clock.now = float(t)
        bar.update(10)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "imagenet: classifier: 20/1,000 prompts (2%), 2 s",
        "imagenet: classifier: 320/1,000 prompts (32%), 32 s",
        "imagenet: classifier: 620/1,000 prompts (62%), 62 s",
        "imagenet: classifier: done, 700 prompts in 70.0 s",
    ]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_on_a_terminal_lines_elsewhere_nothing_when_quiet():
    from tqdm import tqdm

    assert isinstance(progress_bar(5, "x", stream=Tty()), tqdm)
    assert isinstance(progress_bar(5, "x", stream=io.StringIO()), LineProgress)
    assert type(progress_bar(5, "x", enabled=False, stream=Tty())) is NoProgress


@pytest.fixture
def lines_at_once(monkeypatch):
    """Line mode with no waiting: every phase says where it is at once."""
    monkeypatch.setattr("evalkit.progress.FIRST_LINE_AFTER_S", 0.0)


def test_the_classifier_and_the_images_show_progress_in_a_log(tiny_arch, tmp_path, capsys, lines_at_once):
    root = make_wds(tmp_path / "wds_p", n_per_class=1, nshards=1)
    assert cli.main(["run", "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir",
                     str(tmp_path / "out"), "--no-cache"]) == 0
    err = capsys.readouterr().err  # not a terminal here: lines, no bar redraws
    n = len(CLASSNAMES)
    assert "\r" not in err
    assert f"classifier ({n} classes x " in err and "prompts" in err
    n_templates = len((root / "zeroshot_classification_templates.txt").read_text().splitlines())
    assert f"done, {n * n_templates} prompts in" in err
    assert f"done, {n} img in" in err


def test_quiet_prints_nothing_and_the_api_shows_lines_too(tiny_arch, tmp_path, capsys, lines_at_once):
    from evalkit.api import evaluate

    root = make_wds(tmp_path / "wds_q", n_per_class=1, nshards=1)
    assert cli.main(["run", "--model", f"open_clip:{tiny_arch}", "--tasks", f"wds:{root}", "--output-dir",
                     str(tmp_path / "out"), "--no-cache", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    evaluate(f"open_clip:{tiny_arch}", f"wds:{root}", output_dir=tmp_path / "api", cache_dir=None)
    assert "classifier (" in capsys.readouterr().err


@pytest.mark.parametrize("argv, hint", [
    (["--pretrained", "laion2b"], "--pretrained is clip_benchmark's --pretrained; evalkit run takes --weights"),
    (["--dataset", "cifar10"], "--dataset is clip_benchmark's --dataset; evalkit run takes --tasks"),
    (["--batch_size", "8"], "--batch_size: evalkit spells it --batch-size"),
    (["--output_path", "x"], "--output_path is lm-evaluation-harness's --output_path; evalkit run takes --output-dir"),
    (["--output", "x.json"], "evalkit run takes --output-dir"),
    (["--tasks", "list"], "run `evalkit list tasks`"),
])
def test_flags_from_other_tools_get_a_one_line_hint(argv, hint, capsys):
    base = ["run", "--model", "eva-clip-demo"] + ([] if "--tasks" in argv or "--dataset" in argv else ["--tasks", "demo"])
    assert cli.main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and hint in err and "unrecognized arguments" not in err


def test_verbose_after_the_subcommand_is_accepted(monkeypatch):
    seen = {}

    def fake_run(args):
        seen["verbose"] = args.verbose
        return 0

    from evalkit.cli import run as run_cli

    monkeypatch.setattr(run_cli, "cmd_run", fake_run)
    assert cli.main(["run", "-v", "--model", "eva-clip-demo", "--tasks", "demo"]) == 0
    assert seen["verbose"] is True
    assert cli.main(["run", "--model", "eva-clip-demo", "--tasks", "demo"]) == 0
    assert seen["verbose"] is False


def test_verbose_after_a_nested_subcommand(tmp_path, capsys):
    assert cli.main(["data", "check", "-v", "--tasks", f"wds:{tmp_path / 'none'}"]) == 1
    assert "unrecognized arguments" not in capsys.readouterr().err


def test_a_terminal_of_no_width_gets_lines(monkeypatch):
    """Some pty wrappers report a terminal of 0 columns: tqdm would draw nothing there."""
    import os

    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))

    class ZeroTty(Tty):
        def fileno(self) -> int:
            return 2

    assert isinstance(progress_bar(5, "x", stream=ZeroTty()), LineProgress)


def test_an_unknown_flag_shows_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "check", "--tasks", "demo", "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: evalkit data check" in err and "unrecognized arguments: --bogus" in err
