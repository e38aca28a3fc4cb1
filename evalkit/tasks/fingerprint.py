"""A task's dataset fingerprint without a model (``evalkit data fingerprint``; the certificate's
check of a dataset): :func:`fingerprint_task`.

The task's data is found by its family's ``prepare``, as a run finds it (the same layouts, class
lists and labels), and every sample decoded as a run's loader decodes it and hashed
(:mod:`evalkit.data.fingerprint`): a video task's clips at the frames of its view's sampler (the
task file's own, or the ``--frames`` it was resolved with), a 3D task's point arrays. The root
equals the ``data_fingerprint.root`` a complete run of the task records. A task over several
splits (``protocol.splits``) is one root over every split's samples, as its result records it;
a family with a train split (few-shot, linear probe) gives that split's fingerprint as ``train``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from evalkit.data.fingerprint import Fingerprint, fingerprint_data
from evalkit.errors import EvalkitError
from evalkit.tasks.base import TEST_SPLIT, declared_splits, split_data
from evalkit.tasks.spec import TaskSpec

__all__ = ["FingerprintUnavailable", "fingerprint_task"]


class FingerprintUnavailable(EvalkitError, ValueError):
    """A task whose data cannot be read without a model (a plugin family without ``prepare``)."""


def fingerprint_task(spec: TaskSpec, data_root: str | Path | None, *, progress: bool = True) -> dict[str, Any]:
    """The content fingerprint of ``spec``'s data under ``data_root``, read standalone: the
    ``data_fingerprint`` dict a result records (``scheme``, ``root``, ``samples``, ``hashed``,
    ``undecodable``, ``duplicates``, ``complete``, ``from``), plus ``task``, ``class_counts``
    (listed samples per label, by class index), ``classes`` (the task's class count, when it
    has one), ``undecodable_samples`` (the first 100 as [key, reason]), ``captions`` (retrieval),
    and ``train`` (the same figures of a declared train split). A missing or malformed dataset
    raises the family's DataError (the message names the task and the folders looked in)."""
    from evalkit.registry import task_families
    from evalkit.tasks import load_builtin_families
    from evalkit.tasks.common import task_view

    load_builtin_families()
    family = task_families.get(spec.family)()
    if not callable(getattr(family, "prepare", None)):
        raise FingerprintUnavailable(f"task {spec.name!r}: its family {spec.family!r} finds its data only while it "
                                     f"runs a model (it has no prepare); no fingerprint without a model")
    if spec.view_spec is None:
        family.validate(spec)
    view = spec.view_spec if spec.view_spec is not None else task_view(spec, family)
    sampler = getattr(view, "sampler", None)  # a frames view: the frames a run decodes
    splits = declared_splits(family)
    parts = [sub for _, sub in spec.split_specs()] or [spec]
    per_split: dict[str, list[tuple[Fingerprint, dict[str, Any]]]] = {s: [] for s in splits}
    for k, sub in enumerate(parts, start=1):
        prepared = family.prepare(sub, data_root)
        for split in splits:
            where = spec.name + (f" (split {k})" if len(parts) > 1 else "") + ("" if split == TEST_SPLIT else f" ({split})")
            per_split[split].append(fingerprint_data(split_data(prepared, split), sampler=sampler, progress=progress,
                                                     desc=f"{where}: fingerprint"))
    out = {**_combine(per_split[TEST_SPLIT]), "task": spec.name}
    n_classes = len(spec.classnames) if spec.classnames else None
    if n_classes:
        out["classes"] = n_classes
    for split in splits:
        if split != TEST_SPLIT:
            out[split] = _combine(per_split[split])
    return out


def _combine(parts: list[tuple[Fingerprint, dict[str, Any]]]) -> dict[str, Any]:
    """One dict of several splits' fingerprints (one root over all of them) and their figures."""
    fps = [fp for fp, _ in parts]
    merged = fps[0].merge(*fps[1:])
    counts: Counter[str] = Counter()
    for _, extra in parts:
        counts.update(extra["class_counts"])
    out = {**merged.as_dict(),
           "class_counts": dict(sorted(counts.items(), key=lambda kv: (not kv[0].lstrip("-").isdigit(),
                                                                       int(kv[0]) if kv[0].lstrip("-").isdigit()
                                                                       else 0, kv[0]))),
           "undecodable_samples": [b for _, extra in parts for b in extra["undecodable_samples"]][:100]}
    captions = sum(extra.get("captions", 0) for _, extra in parts)
    if captions:
        out["captions"] = captions
    return out
