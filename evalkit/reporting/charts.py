"""Few-shot results as curves over K: one line per task, top-1 (mean over seeds, ± std as a band)
against the samples per class, for ``evalkit report`` (a table in the report and a PNG a model).

Reads any result whose metrics hold ``acc1@{K}shot`` (the linear-probe family's), so a task of
any modality appears here once it has a few-shot run."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evalkit.metric_table import parse
from evalkit.results import TaskResult, safe_name

FEWSHOT_METRIC = "acc1@{k}shot"  # the metric table's row of the linear probe's top-1 at K shots


def fewshot_points(result: TaskResult) -> list[tuple[int, float, float]]:
    """(K, top-1 %, std %) for each K a result has, in K order; empty for other results."""
    out = []
    for name, value in result.metrics.items():
        parsed = parse(name)
        if parsed is not None and parsed.metric.name == FEWSHOT_METRIC and not parsed.suffix \
                and isinstance(value, (int, float)):
            std = result.metrics.get(f"{name}_std", 0.0)
            out.append((int(parsed.k or 0), 100 * float(value), 100 * float(std or 0.0)))
    return sorted(out)


def fewshot_curves(results: Iterable[TaskResult]) -> dict[str, list[tuple[int, float, float]]]:
    """Task -> its curve, for the results that have one."""
    return {r.dataset: pts for r in results if (pts := fewshot_points(r))}


def fewshot_section(curves: dict[str, list[tuple[int, float, float]]]) -> str:
    """A markdown table: one row per task, one column per K, ``mean ± std``."""
    ks = sorted({k for pts in curves.values() for k, _, _ in pts})
    lines = ["| task | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for task, pts in sorted(curves.items()):
        by_k = {k: f"{v:.2f} ± {s:.2f}" for k, v, s in pts}
        lines.append(f"| {task} | " + " | ".join(by_k.get(k, "—") for k in ks) + " |")
    return "\n".join(lines)


def fewshot_chart(model: str, curves: dict[str, list[tuple[int, float, float]]]) -> bytes:
    """The curves as PNG bytes (log-2 K axis; same input, same bytes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for task, pts in sorted(curves.items()):
        ks, vs, ss = zip(*pts, strict=True)
        ax.plot(ks, vs, marker="o", label=task)
        ax.fill_between(ks, [max(0.0, v - s) for v, s in zip(vs, ss, strict=True)],
                        [min(100.0, v + s) for v, s in zip(vs, ss, strict=True)], alpha=0.2)  # a percentage
    ax.set_xscale("log", base=2)
    ks = sorted({k for pts in curves.values() for k, _, _ in pts})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("samples per class (K)")
    ax.set_ylabel("top-1 (%), mean ± std over seeds")
    title = model.replace("$", r"\$")  # no mathtext
    ax.set_title(f"{title}: few-shot linear probe", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def figure_png(fig: Any) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes: Agg, cropped to its contents, no version string in the
    metadata (the same figure gives the same bytes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    return buf.getvalue()


def fewshot_chart_path(output_dir: str | Path, model: str) -> Path:
    return Path(output_dir) / f"{safe_name(model)}_fewshot.png"


__all__: list[Any] = ["figure_png", "fewshot_points", "fewshot_curves", "fewshot_section", "fewshot_chart", "fewshot_chart_path"]
