"""The per-model claimed-vs-verified chart (:func:`evalkit.reporting.report._chart`): per row the
claim's mark, the verified value on its interval bar, Δ and the verdict as a symbol and a word."""

from __future__ import annotations

import io

import matplotlib.text
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from PIL import Image

from evalkit.reporting import report
from evalkit.reporting.catalog import load_catalog
from evalkit.reporting.verdicts import judge

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASK_ORDER = load_catalog().task_order


def _rows(n: int, metric: str | dict[str, str] = "acc1") -> pd.DataFrame:
    """``n`` claims-table rows (the columns write_report passes), with one not-run claim and one
    result without a claim. Deltas of both signs, intervals of several widths (one row without),
    claimed values with one decimal as printed, verdicts as the rules give them."""
    records = []
    for i, task in enumerate(TASK_ORDER[:n]):
        claimed: float | None = round(40.0 + (i * 7.3) % 55, 1)
        verified: float | None = round(claimed + (-1) ** i * (0.2 + 0.37 * (i % 4)), 4)
        half = (0.3, 1.0, 2.5)[i % 3]
        if i % 10 == 2:
            verified = round(claimed + 0.03, 4)  # prints as the claim
        if n > 2 and i == 3:
            verified = None  # claimed, not run yet
        if n > 2 and i == 5:
            claimed = None  # a result no claim covers
        m = metric.get(task, "acc1") if isinstance(metric, dict) else metric
        delta = None if claimed is None or verified is None else round(verified - claimed, 6) + 0.0
        ci = None if verified is None or i == 4 else (verified - half, verified + half)
        if claimed is None:
            status = "no claim"
        elif verified is None:
            status = "not run"
        else:
            status = judge(claimed, 1, verified, ci=ci, flip_points=0.05 if i % 2 else 0.0).status
        records.append({"model": "eva-x", "task": task, "metric": m, "transform": "best-of-both",
                        "protocol": "", "claimed": claimed, "decimals": None if claimed is None else 1,
                        "verified": verified, "delta": delta, "status": status,
                        "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
                        "flip_points": 0.05 if i % 2 else 0.0, "primary": True, "note": ""})
    df = pd.DataFrame.from_records(records)
    for c in ("claimed", "verified", "delta", "ci_low", "ci_high", "flip_points"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()]


def _signed(delta: float) -> str:
    return f"{delta:+.2f}".replace("-", "−")


@pytest.mark.parametrize("n", [2, 30])
def test_chart_texts_name_metric_values_and_deltas(n):
    rows = _rows(n)
    fig = report._chart_figure("eva-x", rows)
    texts = _texts(fig)
    joined = "\n".join(texts)
    assert "top-1 accuracy (%)" in texts  # the metric, on the value axis
    assert "eva-x" in joined
    for task in rows["task"]:
        assert task in texts
    for c, v, d in zip(rows["claimed"], rows["verified"], rows["delta"], strict=True):
        if not pd.isna(c):
            assert f"{c:.1f}" in texts
        if not pd.isna(v):
            assert f"{v:.2f}" in texts
        if not pd.isna(d):
            assert _signed(d) in texts  # signed, with a real minus sign
    assert any(t.startswith("−") for t in texts) and any(t.startswith("+") for t in texts)
    assert "Δ" in texts and "verdict" in texts
    # every row's verdict, as a symbol and a word (readable without colour)
    for status in rows["status"]:
        assert report._chart_verdict(status) in texts
    if n > 2:
        assert {"✓ reproduced", "≈ consistent", "✗ differs"} <= set(texts)
    if n > 2:  # missing numbers are said to be missing, not drawn as zero
        assert "not run" in texts and "no claim" in texts
        assert "0.00" not in texts and "0.0" not in texts
        assert texts.count("—") == 2  # no Δ for the not-run and the unclaimed row
        assert "– not run" in texts and "· no claim" in texts


def test_chart_names_each_metric_when_tasks_differ():
    rows = _rows(33, {"kinetics400": "mean_acc1_acc5", "flickr30k": "mean_recall", "coco": "mean_recall"})
    texts = _texts(report._chart_figure("eva-x", rows))
    assert "kinetics400 (mean top-1/top-5)" in texts
    assert "flickr30k (mean recall)" in texts
    assert "imagenet1k" in texts  # the common metric is named once, on the axis
    assert any("top-1 accuracy" in t and "brackets" in t for t in texts)

    two = _rows(2, {"imagenet1k": "acc1", "imagenetv2": "text_retrieval_recall@5"})
    texts = _texts(report._chart_figure("eva-x", two))
    assert "imagenetv2 (i2t R@5)" in texts and "imagenet1k" in texts


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(png)) as im:
        return im.size


def test_chart_png_size_grows_with_tasks():
    w2, h2 = _png_size(report._chart("eva-x", _rows(2)))
    w30, h30 = _png_size(report._chart("eva-x", _rows(30)))
    assert 600 <= w2 <= 1400 and 600 <= w30 <= 1400  # about the same width, any task count
    assert 200 <= h2 <= 600
    per_task = (h30 - h2) / 28
    assert 30 <= per_task <= 80  # each extra task adds a row of readable height, not a squeeze


def test_chart_png_is_deterministic():
    rows = _rows(30)
    first, second = report._chart("eva-x", rows), report._chart("eva-x", rows)
    assert first == second
    assert b"Matplotlib" not in first and b"Software" not in first  # no version string in metadata


def _extents(fig):
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    ax, axd = fig.axes
    bars = [p.get_window_extent(renderer) for a in (ax, axd) for p in a.patches
            if isinstance(p, Rectangle) and p.get_width() > 0]
    marks = [line.get_window_extent(renderer) for a in (ax, axd) for line in a.lines if line.get_marker() != "None"]
    labels = [t for a in (ax, axd) for t in a.texts if t.get_text()]
    return renderer, ax, bars, marks, labels


@pytest.mark.parametrize("n", [2, 30])
def test_chart_is_legible(n):
    """Readable fonts, value, Δ and verdict labels that overlap neither each other nor a bar or a
    mark, an interval bar for every verified number that has one, a legend outside the panels,
    and everything inside the saved picture."""
    rows = _rows(n)
    fig = report._chart_figure("eva-x", rows)
    renderer, ax, bars, marks, labels = _extents(fig)
    with_interval = int(rows["ci_low"].notna().sum())
    claimed = int(rows["claimed"].notna().sum())
    on_both = int((rows["ci_low"].notna() & rows["claimed"].notna()).sum())
    # the value panel: one interval bar per verified interval; the Δ panel: one rounding band per
    # claim and the interval again where there is a claim to measure it from
    assert len(bars) == with_interval + claimed + on_both
    # a claim's diamond in both panels, a verified dot in the value panel and, measured from a
    # claim, in the Δ panel
    verified = int(rows["verified"].notna().sum())
    measured = int((rows["claimed"].notna() & rows["verified"].notna()).sum())
    assert len(marks) == 2 * claimed + verified + measured
    for t in fig.findobj(matplotlib.text.Text):
        if t.get_visible() and t.get_text():
            assert t.get_fontsize() >= 8, t.get_text()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            assert not ba.overlaps(bb), (a, b)
        for bar in bars:
            assert not ba.overlaps(bar), a
    for tick in ax.get_yticklabels():
        for bar in bars:
            assert not tick.get_window_extent(renderer).overlaps(bar), tick.get_text()
    legend = fig.legends[0].get_window_extent(renderer)
    for bar in bars + marks:
        assert not legend.overlaps(bar)
    for _, b in boxes:
        assert not legend.overlaps(b)
    # bbox_inches="tight" keeps everything: the PNG is at least as large as every text's extent
    tight = fig.get_tightbbox(renderer)
    w, h = _png_size(report._chart("eva-x", _rows(n)))
    assert w >= tight.width * fig.dpi - 2 and h >= tight.height * fig.dpi - 2


def test_write_report_writes_the_chart_bytes(tmp_path, monkeypatch):
    """write_report writes _chart's PNG through the atomic writer."""
    written: dict = {}
    real = report.atomic_write_bytes

    def spy(path, data):
        written[path.name] = data
        real(path, data)

    monkeypatch.setattr(report, "atomic_write_bytes", spy)
    claims = pd.DataFrame({"model": ["eva-x", "eva-x"], "task": ["imagenet1k", "cifar10"],
                           "metric": ["acc1", "acc1"], "claimed": [80.0, 95.0]})
    paths = report.write_report(tmp_path, claims, model="eva-x")
    png = tmp_path / "eva-x_claimed_vs_verified.png"
    table = report.verified_table(tmp_path, claims, model="eva-x")
    assert png in paths and written[png.name] == png.read_bytes() == report._chart("eva-x", table[table["primary"]])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    texts = _texts(report._chart_figure("eva-x", table))
    assert texts.count("not run") == 2 and "80.0" in texts and "95.0" in texts
