"""Train the embedded demo model: a tiny EVA-CLIP (18B-style blocks) on ShapeWorld, from scratch.

    python -m evalkit.demo.train --out evalkit/demo/weights --steps 700 --batch-size 96 --seed 0

Contrastive (CLIP InfoNCE, learnable temperature) on freshly drawn captions of pre-rendered
ShapeWorld training images, every caption in the batch that fits an image counting as its
positive, plus an InfoNCE of each image against one prompt per shape and per colour (see
``TrainSettings.attr_weight``); then zero-shot evaluation on the demo tasks' held-out test images
with the standard CLIP classifier, measured after reloading the fp16 checkpoint that is written.
About 0.5 s a step on 2 idle CPU cores (~6 min for the default 700 steps).

Heavy imports (torch, open_clip) happen inside the functions that need them so that ``--help``
answers at once: importing open_clip alone takes ~10 s on a small CPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from evalkit.models.eva_clip import EvaClip, EvaClipConfig

__all__ = [
    "DEMO_CONFIG",
    "CLIP_MEAN",
    "CLIP_STD",
    "TOKENIZER",
    "DEFAULT_WEIGHTS",
    "TrainSettings",
    "train",
    "load_demo_model",
    "init_for_training",
    "zero_shot_top1",
    "main",
]

#: the demo architecture in BAAI's model-config layout: EVA-CLIP-18B's block design (branch
#: post-norm, RMSNorm, no qkv bias) at toy size. The 49408-token embedding is most of the weights.
DEMO_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "layers": 4,
        "width": 128,
        "head_width": 32,
        "mlp_ratio": 4.0,
        "patch_size": 4,
        "qkv_bias": False,
        "postnorm": True,
        "use_rms_norm": True,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}
# OpenAI CLIP normalisation, the one EVA-CLIP uses.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: open_clip tokenizer name: the CLIP BPE (vocab 49408, context 77, EOT = 49407 = the largest id).
TOKENIZER = "ViT-B-32"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
# Held-out images of the final measurement: those of tasks/demo/shapeworld-*.yaml (test split, seed
# 2024, 1000 images). The --eval-every monitor uses other test images (seed 1), so watching it
# while tuning does not tune on the reported set.
_EVAL_SEED = 2024
_MONITOR_SEED = 1


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 700
    batch_size: int = 96
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 40
    n_train: int = 8000  # distinct pre-rendered training images (captions are re-drawn each time)
    n_eval: int = 1000  # held-out test images per zero-shot task
    multi_positive: bool = True  # every caption in the batch that fits an image is its positive
    # Weight of the image-vs-class-prompt contrastive term (each image against the prompts of
    # all shapes, and of all colours). Why: with captions alone colour is learned in 100 steps
    # but shape stays near chance for hundreds more, since colour already separates most pairs.
    attr_weight: float = 1.0
    threads: int = 2
    max_shard_bytes: int = 4 * 2**20
    log_every: int = 25
    eval_every: int = 0  # > 0: also log zero-shot top-1 on 200 test images every this many steps


def _tokenizer():
    import open_clip

    return open_clip.get_tokenizer(TOKENIZER)


class _CachedTokenizer:
    """The CLIP BPE with a per-caption cache: ShapeWorld has only ~10k distinct captions, and
    re-tokenising 256 of them costs ~30 ms a step, a tenth of the step itself."""

    def __init__(self) -> None:
        self._tok = _tokenizer()
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, row in zip(missing, self._tok(missing), strict=True):
                self._cache[text] = row
        return torch.stack([self._cache[t] for t in texts])


def _cut_to_longest(tokens: torch.Tensor) -> torch.Tensor:
    # The text tower is causal with EOT (argmax) pooling, so padding after the longest EOT cannot
    # influence any pooled feature: dropping it is exact and saves most of the text compute.
    return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]


def _prerender(n: int, seed: int, split: str, image_size: int) -> tuple[torch.Tensor, list]:
    """Render samples ``0..n-1`` and apply the evaluation geometry (shortest side to
    ``image_size`` bicubic, centre crop) once; returns uint8 ``(n, 3, S, S)`` and the attributes."""
    import numpy as np
    import torch
    from torchvision import transforms as T

    from evalkit.demo.shapeworld import render, sample_attrs

    geometry = T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)])
    out = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    attrs = []
    for i in range(n):
        a = sample_attrs(seed, split, i)
        attrs.append(a)
        out[i] = torch.from_numpy(np.asarray(geometry(render(a)), dtype=np.uint8).copy()).permute(2, 0, 1)
    return out, attrs


def _normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """Same arithmetic as ``ToTensor`` + ``Normalize(CLIP_MEAN, CLIP_STD)`` on uint8 pixels."""
    import torch

    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images_u8.float() / 255.0 - mean) / std


def _fit_matrix(described: list[tuple[str, frozenset[str]]], attrs: list, multi_positive: bool) -> torch.Tensor:
    """``fit[i, j] = 1`` where caption ``i`` is a true caption of image ``j``.

    Why not plain CLIP's identity: ShapeWorld has only 36 shape-colour pairs, so in a batch of 64
    "a red circle" is also the caption of every other red circle; plain InfoNCE pushes those
    images away from a correct caption, a false-negative signal that slows learning the shape.
    With ``multi_positive=False`` this is the identity (plain CLIP InfoNCE).
    """
    import torch

    from evalkit.demo.shapeworld import fits

    n = len(described)
    if not multi_positive:
        return torch.eye(n)
    return torch.tensor([[float(fits(named, attrs[i], attrs[j])) for j in range(n)]
                         for i, (_, named) in enumerate(described)])


def _lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def zero_shot_top1(
    model: EvaClip,
    task: str,
    n: int = 500,
    seed: int = _EVAL_SEED,
    tokenizer: Any = None,
    batch_size: int = 250,
) -> float:
    """Zero-shot top-1 on ShapeWorld test images, with the standard CLIP classifier: per class,
    encode every template, L2-normalise, average, renormalise; predict the argmax of image·class."""
    import torch
    import torch.nn.functional as F

    from evalkit.demo.shapeworld import ShapeWorldClassification, class_prompts
    from evalkit.views.transforms import build_transform

    tokenizer = tokenizer or _tokenizer()
    data = ShapeWorldClassification(task=task, split="test", n=n, seed=seed)
    transform = build_transform("crop", model.cfg.vision.image_size, CLIP_MEAN, CLIP_STD, "bicubic")
    model.eval()
    with torch.inference_mode():
        weights = []
        for prompts in class_prompts(task, data.classnames):
            f = F.normalize(model.encode_text(_cut_to_longest(tokenizer(prompts))), dim=-1)
            weights.append(F.normalize(f.mean(dim=0), dim=-1))
        classifier = torch.stack(weights, dim=1)
        correct = 0
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            images = torch.stack([transform(data[i][0]) for i in idx])
            labels = torch.tensor([data.label(i) for i in idx])
            pred = (F.normalize(model.encode_image(images), dim=-1) @ classifier).argmax(dim=-1)
            correct += int((pred == labels).sum())
    return correct / n


def load_demo_model(folder: str | Path = DEFAULT_WEIGHTS, dtype: torch.dtype | None = None) -> EvaClip:
    """The demo model from a folder written by :func:`train` (``config.json`` + sharded fp16
    safetensors), in ``dtype`` (default fp32), strict about missing and unexpected keys."""
    import torch

    from evalkit.models.eva_clip import EvaClip, EvaClipConfig

    folder = Path(folder)
    cfg = EvaClipConfig.from_json(folder / "config.json")
    model = EvaClip(cfg)
    # The project's reader: index + shards, strict key check, cast to the model's dtype.
    from evalkit.models.checkpoint import load_checkpoint

    model = model.to(dtype or torch.float32)
    load_checkpoint(model, folder)
    return model.eval()


def _sincos_2d(grid: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes, ``(grid * grid, width)``: half the channels encode
    the row, half the column, each at ``width // 4`` geometric frequencies."""
    import torch

    if width % 4:
        raise ValueError(f"vision width must be divisible by 4 for 2-D sin-cos positions, got {width}")
    freqs = 1.0 / 100.0 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angles = coord[:, None] * freqs[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


def init_for_training(model: EvaClip, seed: int) -> EvaClip:
    """A from-scratch init under which this tiny model learns fast: ``EvaClip.init_weights``, then
    weight matrices and the patch projection at std ``fan_in ** -0.5`` and 2-D sin-cos position
    embeddings (still trained).

    Why: under the 0.02 init of ``init_weights`` both towers start nearly input-independent
    (image features of different images have cosine ~0.99) and the first Adam steps make them
    constant: the contrastive loss then sits at ln(batch) for hundreds of steps. At unit fan-in
    scale the features start diverse and attention starts non-uniform; and a ViT this small,
    trained for minutes, never finds where its patches are unless it starts knowing it, which
    is what recognising a shape (rather than a colour) needs.
    """
    import torch

    model.init_weights(seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("text_projection"):
                fan_in = p.shape[0]  # applied as ``x @ W``: (in, out)
            elif name == "visual.patch_embed.proj.weight" or (p.ndim == 2 and "embed" not in name):
                fan_in = p[0].numel()  # Linear / Conv2d weights are (out, in, ...)
            else:
                continue
            p.copy_(torch.randn(p.shape, generator=g) * fan_in**-0.5)
        vision = model.visual
        vision.pos_embed[0, 1:].copy_(_sincos_2d(vision.cfg.grid, vision.cfg.width))
        vision.pos_embed[0, 0].zero_()
    return model


_SHAPE_PROMPTS = ("a {c}.", "a photo of a {c}.", "a {c} shape.", "a drawing of a {c}.", "there is a {c}")
_COLOUR_PROMPTS = ("something {c}.", "a {c} shape.", "a {c} object.", "a photo of something {c}.", "a {c} thing")


def _attribute_loss(model: EvaClip, img: torch.Tensor, attrs: list, tokenizer: Any, step: int) -> torch.Tensor:
    """InfoNCE of each image against one prompt per shape and one per colour (prompt wording
    rotates with the step; these training prompts differ from the evaluation templates)."""
    import torch
    import torch.nn.functional as F

    from evalkit.demo.shapeworld import COLOURS, SHAPES

    scale = model.logit_scale.exp()
    loss = img.new_zeros(())
    for names, prompts, attr in ((SHAPES, _SHAPE_PROMPTS, "shape"), (COLOURS, _COLOUR_PROMPTS, "colour")):
        template = prompts[step % len(prompts)]
        txt = F.normalize(model.encode_text(_cut_to_longest(tokenizer([template.format(c=c) for c in names]))), dim=-1)
        target = torch.tensor([names.index(getattr(a, attr)) for a in attrs])
        loss = loss + F.cross_entropy(scale * img @ txt.t(), target)
    return loss


def _param_groups(model: EvaClip, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only: norms, biases and the temperature are scale parameters, and decaying
    # the positional/class embeddings would only fight the patch signal at this size.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim >= 2 and "pos_embed" not in name and "cls_token" not in name and "positional" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    out: str | Path,
    settings: TrainSettings = TrainSettings(),
    model_config: dict[str, Any] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Train, write the fp16 sharded checkpoint + ``config.json`` + ``training.json`` to ``out``,
    and return the training record (also written as ``training.json``)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from evalkit.demo.shapeworld import describe
    from evalkit.models.checkpoint import save_sharded
    from evalkit.models.eva_clip import EvaClip, EvaClipConfig, count_parameters

    t_start = time.perf_counter()
    s = settings
    if s.steps < 1 or s.batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2 for contrastive training, got {s.steps}, {s.batch_size}")
    if s.n_train < s.batch_size:
        raise ValueError(f"n_train ({s.n_train}) must be at least batch_size ({s.batch_size})")
    raw_cfg = model_config or DEMO_CONFIG
    cfg: EvaClipConfig = EvaClipConfig.from_dict(raw_cfg, source="demo model config")
    tokenizer = _CachedTokenizer()
    if cfg.text.vocab_size != 49408 or cfg.text.context_length != 77:
        raise ValueError(
            f"text_cfg must match the CLIP BPE tokenizer (vocab_size 49408, context_length 77), got "
            f"{cfg.text.vocab_size}, {cfg.text.context_length}"
        )

    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng([s.seed, 1234])  # batch order and caption draws

    t0 = time.perf_counter()
    images_u8, attrs = _prerender(s.n_train, s.seed, "train", cfg.vision.image_size)
    log(f"pre-rendered {s.n_train} training images in {time.perf_counter() - t0:.1f}s")

    model = init_for_training(EvaClip(cfg), s.seed)
    model.train()
    n_params = count_parameters(model)
    log(f"parameters: {n_params}")
    opt = torch.optim.AdamW(_param_groups(model, s.weight_decay), lr=s.lr, betas=(0.9, 0.98), eps=1e-6)
    max_log_scale = math.log(100.0)  # CLIP's cap on the learned temperature

    losses: list[float] = []
    t_loop = time.perf_counter()
    for step in range(s.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, s)
        idx = rng.choice(s.n_train, size=s.batch_size, replace=False)
        images = _normalise(images_u8[torch.from_numpy(idx)])
        described = [describe(attrs[i], rng) for i in idx]
        tokens = _cut_to_longest(tokenizer([text for text, _ in described]))
        fit = _fit_matrix(described, [attrs[i] for i in idx], s.multi_positive)

        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        # Rows of ``fit`` are captions, columns images; each direction's target spreads evenly over
        # the positives (just the diagonal in plain CLIP).
        loss = 0.5 * (F.cross_entropy(logits, fit.t() / fit.sum(0)[:, None])
                      + F.cross_entropy(logits.t(), fit / fit.sum(1, keepdim=True)))
        if s.attr_weight > 0:
            loss = loss + s.attr_weight * _attribute_loss(model, img, [attrs[i] for i in idx], tokenizer, step)

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_log_scale)
        losses.append(loss.item())
        if s.eval_every and (step + 1) % s.eval_every == 0 and step + 1 < s.steps:
            top1 = {task: zero_shot_top1(model, task, n=200, seed=_MONITOR_SEED, tokenizer=tokenizer)
                    for task in ("shape", "colour")}
            model.train()
            log(f"step {step + 1}: zero-shot top-1 on 200 test images {top1}")
        if (step + 1) % s.log_every == 0 or step + 1 == s.steps:
            elapsed = time.perf_counter() - t_loop
            log(
                f"step {step + 1}/{s.steps} loss {np.mean(losses[-s.log_every:]):.4f} "
                f"scale {model.logit_scale.exp().item():.1f} lr {_lr_at(step, s):.2e} "
                f"{elapsed:.0f}s ({elapsed / (step + 1):.2f}s/step)"
            )
    train_seconds = time.perf_counter() - t_loop

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Old shards of a different count would linger next to the new index: remove them first.
    for old in out.glob("model-*-of-*.safetensors"):
        old.unlink()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    index = save_sharded(state, out, max_shard_bytes=s.max_shard_bytes)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    # Measure what is shipped: the fp16 weights, reloaded into a fresh fp32 model.
    reloaded = load_demo_model(out)
    top1 = {task: zero_shot_top1(reloaded, task, n=s.n_eval, seed=_EVAL_SEED, tokenizer=tokenizer)
            for task in ("shape", "colour")}
    log(f"zero-shot top-1 on {s.n_eval} test images (fp16 weights): {top1}")

    record = {
        "settings": asdict(s),
        "steps": s.steps,
        "batch_size": s.batch_size,
        "seed": s.seed,
        "model_config": cfg.to_dict(),
        "parameters": n_params,
        "checkpoint_bytes": sum(p.stat().st_size for p in out.glob("model-*-of-*.safetensors")),
        "dtype": "float16",
        "tokenizer": f"open_clip:{TOKENIZER}",
        "preprocess": {
            "image_size": cfg.vision.image_size,
            "resize": "shortest side, bicubic, then centre crop",
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
        },
        "final_loss": float(np.mean(losses[-min(len(losses), s.log_every):])),
        "last_step_loss": losses[-1],
        "final_logit_scale": model.logit_scale.exp().item(),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "zero_shot_top1": top1,
        "eval": {"split": "test", "seed": _EVAL_SEED, "n": s.n_eval, "weights": "fp16 reloaded into fp32"},
        "torch": torch.__version__,
        "index": index.name,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _parser() -> argparse.ArgumentParser:
    d = TrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m evalkit.demo.train",
        description="Train the tiny EVA-CLIP demo model on ShapeWorld and write its fp16 sharded checkpoint.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="contrastive batch (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of init, data and batch order (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up (default: %(default)s)")
    p.add_argument("--n-train", type=int, default=d.n_train, help="pre-rendered training images (default: %(default)s)")
    p.add_argument("--n-eval", type=int, default=d.n_eval, help="test images per task (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="log zero-shot top-1 on 200 test images every N steps; 0 = only at the end")
    p.add_argument("--plain-clip", action="store_true",
                   help="plain CLIP InfoNCE (only the paired caption is positive) instead of counting every "
                        "caption in the batch that fits an image as its positive")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--config", type=Path, default=None,
                   help="model config JSON in BAAI layout (default: the built-in demo config)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model_config = None
    if args.config is not None:
        try:
            model_config = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{args.config}: cannot read model config: {e}") from e
    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        lr=args.lr,
        warmup_steps=min(args.warmup_steps, max(1, args.steps // 2)),
        n_train=args.n_train,
        n_eval=args.n_eval,
        threads=args.threads,
        eval_every=args.eval_every,
        multi_positive=not args.plain_clip,
    )
    record = train(args.out, settings, model_config, log=lambda m: print(m, flush=True))
    print(json.dumps({"out": str(args.out), "zero_shot_top1": record["zero_shot_top1"],
                      "wall_seconds": record["wall_seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
