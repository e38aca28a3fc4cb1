"""Metrics as pure functions on tensors, numerically identical to clip_benchmark 1.6.x.

Values are fractions in [0, 1], as clip_benchmark writes them; reports turn them into percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def classification_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """``100 · normalised image features · classifier`` (clip_benchmark's fixed logit scale)."""
    return 100.0 * image_features.float() @ classifier.float()


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1,)) -> list[float]:
    """Fraction of samples whose label is among the top-k logits (torch.topk tie order, as CB)."""
    n = target.shape[0]
    if n == 0:
        raise ValueError("topk_accuracy: no samples")
    pred = logits.topk(max(ks), dim=1, largest=True, sorted=True).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum()) / n for k in ks]


def mean_per_class_recall(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Balanced accuracy: mean recall over the classes that occur in ``target`` (sklearn's
    ``balanced_accuracy_score``, which clip_benchmark uses)."""
    classes = torch.unique(target)
    # float64 like sklearn, so the value is bit-identical, not just close.
    recalls = [(pred[target == c] == c).double().mean() for c in classes]
    return float(torch.stack(recalls).mean())


def zero_shot_classification_metrics(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> dict[str, float]:
    """``acc1``, ``acc5`` (only with ≥ 5 classes, as clip_benchmark) and ``mean_per_class_recall``."""
    if n_classes >= 5:
        acc1, acc5 = topk_accuracy(logits, target, (1, 5))
        metrics = {"acc1": acc1, "acc5": acc5}
    else:
        (acc1,) = topk_accuracy(logits, target, (1,))
        metrics = {"acc1": acc1}
    metrics["mean_per_class_recall"] = mean_per_class_recall(logits.argmax(dim=1), target)
    return metrics
