"""Depth-view rendering (evalkit.views.render) against the image forward that consumes the views.

A batch of ``--clouds`` point clouds of ``--points`` points each (seeded: points on the surfaces of
boxes of random proportions, with noise, like a scanned object) is rendered into 10 views at
224x224 by ``render_depth_views`` (``--preset``, default ``evalkit``: every point drawn; PointCLIP
V2's ``pointclip-v2``, the depth views' default, draws 1,024); the baseline, measured in the same run, is the image tower of
open_clip's ViT-B-32 (random weights, ``open_clip.create_model('ViT-B-32')``, nothing downloaded)
on those same views, already normalised (the forward alone, no preprocessing), in eval mode under
``torch.inference_mode``. Also timed: the per-sample path of a data loader, one cloud at a time
through ``depth_view_images`` (10 PIL images), and the grid steps without the resize (resolution =
grid = 112).

Figures are the best of ``--repeat`` runs after one warm-up, as clouds per second; the headline
ratio is render time / forward time for the same clouds. Target: rendering costs at most 10% of
the ViT-B-32 forward of its views on the CPU (so a 3-D task's time is the model's, not the
renderer's).

``--smoke``: a few seconds' check that the benchmark still runs (2 clouds of 1,000 points, one
repeat, 1 thread, ViT-S-32 as the baseline); its figures mean nothing. The conditions (torch
threads, load average at the start and the end) are printed and written with the figures.

    python benchmarks/bench_render.py [--json OUT] [--clouds 8] [--points 10000] [--repeat 5] [--device cpu]
                                      [--threads N] [--preset evalkit] [--arch ViT-B-32] [--smoke]
"""

from __future__ import annotations

import argparse
import json

import clocks as timing
import numpy as np
import torch
from clocks import conditions, conditions_line

from evalkit.results import atomic_write_text
from evalkit.views.render import depth_view_images, render_depth_views, resolve_preset

VIEWS, SIZE = 10, 224
# open_clip's ViT-B-32 preprocessing constants (OpenAI's mean and std)
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SMOKE = {"clouds": 2, "points": 1000, "repeat": 1, "threads": 1, "arch": "ViT-S-32"}


def make_clouds(n: int, points: int, seed: int = 0) -> torch.Tensor:
    """(n, points, 3): each cloud the surface of a box of random proportions plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        size = rng.uniform(0.3, 1.0, 3)
        p = rng.uniform(-1, 1, (points, 3))
        axis = rng.integers(3, size=points)
        p[np.arange(points), axis] = rng.choice([-1.0, 1.0], points)
        out.append(p * size + rng.normal(0, 0.01, (points, 3)))
    return torch.tensor(np.stack(out), dtype=torch.float32)


def best_of(fn, repeat: int, sync=None) -> float:
    """clocks.best_of with a warm-up call (first calls into torch, the allocator)."""
    return timing.best_of(fn, repeat, warmup=True, sync=sync)[0]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--clouds", type=int, default=8)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    ap.add_argument("--preset", default="evalkit",
                    help="render preset (evalkit.views.render.RENDER_PRESETS; default evalkit: every point drawn, "
                         "where pointclip-v2 draws 1,024)")
    ap.add_argument("--arch", default="ViT-B-32", help="the baseline's open_clip architecture (random weights)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"tiny sizes ({SMOKE}): checks that the benchmark runs; its figures mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = conditions()

    import open_clip

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clouds = make_clouds(args.clouds, args.points).to(device)
    n = args.clouds

    preset = args.preset
    t_render = best_of(lambda: render_depth_views(clouds, VIEWS, SIZE, preset=preset), args.repeat, sync)
    cells = resolve_preset(preset).image_cells  # the render at its own cells: no resize in this row
    t_grid = best_of(lambda: render_depth_views(clouds, VIEWS, cells, preset=preset), args.repeat, sync)
    cpu_clouds = clouds.cpu()
    t_pil = best_of(lambda: [depth_view_images(c, VIEWS, SIZE, preset=preset) for c in cpu_clouds], args.repeat)

    model = open_clip.create_model(args.arch).to(device).eval()
    views = render_depth_views(clouds, VIEWS, SIZE, preset=preset).flatten(0, 1)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    images = (views.float() / 255 - mean) / std

    def forward() -> None:
        with torch.inference_mode():
            model.encode_image(images)

    t_fwd = best_of(forward, args.repeat, sync)

    fig = {
        "smoke": args.smoke, "preset": args.preset, "device": str(device), "torch_threads": torch.get_num_threads(),
        "clouds": n, "points": args.points, "views": VIEWS, "resolution": SIZE, "repeat": args.repeat,
        "render_s": t_render, "render_clouds_per_s": n / t_render,
        "render_grid_only_s": t_grid, "render_grid_only_clouds_per_s": n / t_grid,
        "per_sample_pil_s": t_pil, "per_sample_pil_clouds_per_s": n / t_pil,
        "arch": args.arch, "image_forward_s": t_fwd, "image_forward_clouds_per_s": n / t_fwd,
        "render_over_forward": t_render / t_fwd,
        "per_sample_pil_over_forward": t_pil / t_fwd,
        "target_render_over_forward_max": 0.10,
        "conditions": conditions(start),
    }
    print(f"{n} clouds x {args.points} points, {VIEWS} views at {SIZE}px, preset {args.preset}, {device} "
          f"({fig['torch_threads']} torch thread{'s' if fig['torch_threads'] != 1 else ''}); best of {args.repeat}")
    print(f"{'step':44} {'wall ms':>9} {'clouds/s':>9} {'x forward':>9}")
    rows = (("render_depth_views (batched, uint8 224px)", t_render),
            (f"  grid steps only ({cells}px, no resize)", t_grid),
            ("depth_view_images, one cloud at a time", t_pil),
            (f"baseline: {args.arch} image forward, {VIEWS} views", t_fwd))
    for name, t in rows:
        print(f"{name:44} {t * 1e3:9.1f} {n / t:9.1f} {t / t_fwd:9.3f}")
    ok = fig["render_over_forward"] <= fig["target_render_over_forward_max"]
    print(f"render / forward = {fig['render_over_forward']:.3f} (target <= 0.10: {'met' if ok else 'NOT met'})")
    print(conditions_line(fig["conditions"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(fig, indent=2) + "\n")
    return fig


if __name__ == "__main__":
    main()
