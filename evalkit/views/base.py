"""What every view shares: the runtime :class:`View` contract, :class:`Noted`, the typed
:class:`ViewSpec` a task's ``view:`` block is parsed into, and the registry of view kinds.

A *runtime view* (what :func:`evalkit.features.embed.embed` runs) has three parts, so that every
modality is one small class:

* ``identity``: a string that says everything the embedding depends on besides the model and
  the sample (transform, size, mean/std, interpolation, frame sampling ...). It is part of the
  feature cache key: (model fingerprint, view identity, unit identity).
* ``sample(loaded)``: the per-sample step, run in the data loader (worker processes or the
  background thread): what a source's loader returned (a PIL image, a clip, a point cloud) in,
  a uint8 (or float) tensor out. Tensors of one view have one shape, so a batch is a stack.
* ``embed(encoder, batch)``: the per-batch step, just before and around the forward: normalise,
  call the encoder's tower, pool several images of one sample into one feature, and
  L2-normalise. Returns (B, D).

Two views whose ``batch_key`` is equal run the same per-batch step, so where their per-sample
tensors are equal (a square image under crop and under squash) the embedding is equal too, and
:func:`evalkit.features.embed.embed` encodes it once.

A *view spec* is a task's ``view:`` block as a frozen dataclass, one class per kind of view
(:data:`view_kinds`: ``image``, ``frames``, ``depth-views``, ``points``, and ``cloud``, which is
one of the last two, picked by the encoder's towers). :func:`parse_view` reads a block once, when
the task is resolved (before any data or weights are read), and checks every key and value; the
defaults are the dataclass fields'. A spec builds the runtime views for an encoder, names its
provenance (the keys a result records), the result's name, the noun the data check prints and,
where it has them, its own prompts. The task families never ask which kind they are scoring.

This module imports no torch (``evalkit data check`` asks a task's view kind for its noun without
it); the view kinds import torch where they build or run a view.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from evalkit.errors import OptionError
from evalkit.registry import Registry

if TYPE_CHECKING:
    import torch

#: the image transforms of the EVA-CLIP-18B paper (§7): resize + centre crop, and direct resize
TRANSFORMS = ("crop", "squash")
#: runs both transforms and reports the better of each metric (Table 2's rule)
BEST_OF_BOTH = "best-of-both"
#: what ``view.transform`` and ``--transform`` accept
TRANSFORM_CHOICES = (*TRANSFORMS, BEST_OF_BOTH)


class ViewSpecError(OptionError):
    """A task's ``view:`` block, or a ``--transform`` / ``--frames`` given for it, that is not
    valid; the message names the task file and the key."""


@runtime_checkable
class View(Protocol):
    """See the module docstring."""

    @property
    def identity(self) -> str: ...

    @property
    def batch_key(self) -> Hashable: ...

    def sample(self, loaded: Any) -> torch.Tensor: ...

    def embed(self, encoder: Any, batch: torch.Tensor) -> torch.Tensor: ...


class Noted(NamedTuple):
    """What a view's ``sample`` returns when it had to make the tensor by a documented fallback
    (a cloud with too few points, resampled): the sample is scored, and ``note`` is counted and
    reported with its key (an error under ``--strict``)."""

    tensor: torch.Tensor
    note: str


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view, as its task file configures it. Subclasses are frozen dataclasses whose
    fields are the kind's settings with their defaults, registered in :data:`view_kinds`."""

    #: the kind's name in :data:`view_kinds` (``view.kind`` in a task file)
    kind: ClassVar[str] = ""
    #: the keys of a ``view:`` block this kind reads
    keys: ClassVar[tuple[str, ...]] = ()
    #: a key whose presence in a ``view:`` block without ``kind`` means this kind (``frames``)
    marker: ClassVar[str | None] = None
    #: what the samples are, as ``evalkit data check`` says it ("12 listed clips not on disk")
    noun: ClassVar[str] = "samples"
    #: the encoder tower the kind's runtime views feed (a resolved kind names one)
    tower: ClassVar[str] = "image"

    #: the task file (or ad-hoc name) the view came from: what every error names
    where: str = field(default="", compare=False, repr=False, kw_only=True)

    @classmethod
    def parse(cls, view: Mapping[str, Any], where: str, *, transform: str | None, frames: str | None,
              default_transform: str | None, base_dir: Path | None) -> ViewSpec:
        """The kind's spec from a ``view:`` block whose keys are checked already, with the run's
        overrides applied. ``ViewSpecError`` names the file and the key at fault."""
        raise NotImplementedError

    def resolve(self, encoder: Any) -> ViewSpec:
        """This view as it runs on ``encoder``: checked against its towers, settings left to the
        tower filled in, a choice left to the encoder (``cloud: auto``) made."""
        return self

    @property
    def mode(self) -> str:
        """What a result records as its ``transform``."""
        raise NotImplementedError

    @property
    def modes(self) -> tuple[str, ...]:
        """The names of the views :meth:`build` makes, in order (best-of-both: crop, squash)."""
        raise NotImplementedError

    def build(self, encoder: Any) -> dict[str, View]:
        """The runtime views for ``encoder``, by name (one per entry of :attr:`modes`)."""
        raise NotImplementedError

    def provenance(self, task: str) -> dict[str, Any]:
        """The keys a result of task ``task`` records about its view."""
        return {"transform": self.mode, "transforms_run": list(self.modes)}

    def result_name(self, task: str) -> str:
        """The name a result of task ``task`` is written under."""
        return task

    @property
    def prompts(self) -> tuple[str, ...] | None:
        """Prompts of the view's own that replace the task's templates (depth maps are not
        photos), or None."""
        return None

    def error(self, message: str) -> ViewSpecError:
        return ViewSpecError(f"{self.where}: {message}" if self.where else message)


#: evalkit's own view kinds register when their modules are imported (on the first lookup)
BUILTIN_VIEW_MODULES = tuple(f"evalkit.views.{m}" for m in ("image", "frames", "depth", "points", "cloud"))
view_kinds: Registry[type[ViewSpec]] = Registry("view kind", "evalkit.view_kinds", builtins=BUILTIN_VIEW_MODULES)


def view_kind(view: Mapping[str, Any], where: str = "") -> type[ViewSpec]:
    """The kind of a ``view:`` block: its ``kind``, else the kind whose marker key it has
    (``frames``: a video clip's frames, ``cloud``: a point cloud), else ``image``."""
    at = f"{where}: " if where else ""
    if not isinstance(view, Mapping):
        raise ViewSpecError(f"{at}field 'view' must be a mapping")
    kinds = dict(view_kinds.items())
    if "kind" in view:
        name = view["kind"]
        if not isinstance(name, str) or name not in kinds:
            raise ViewSpecError(f"{at}view.kind {name!r} is not a view kind; choose from {', '.join(kinds)}")
        return kinds[name]
    marked = [k for k, cls in kinds.items() if cls.marker is not None and cls.marker in view]
    if len(marked) > 1:
        keys = " and ".join(repr(kinds[k].marker) for k in marked)
        raise ViewSpecError(f"{at}the view has both {keys}; a view is one kind (set view.kind)")
    return kinds[marked[0]] if marked else kinds["image"]


def parse_view(view: Mapping[str, Any], where: str, *, transform: str | None = None, frames: str | None = None,
               default_transform: str | None = None, base_dir: str | Path | None = None) -> ViewSpec:
    """A task's ``view:`` block as its typed :class:`ViewSpec`, every key and value checked.

    ``where``: the task file (errors name it); ``transform`` / ``frames``: the run's
    ``--transform`` / ``--frames``, which replace the block's own (``--frames`` only for a view
    that samples frames); ``default_transform``: the family's transform when the block names none
    (else the kind's own default); ``base_dir``: where file names in the block resolve (the task
    file's folder). An unknown key, a bad value or an override the view cannot take is a
    :class:`ViewSpecError` naming ``where`` and the key."""
    cls = view_kind(view, where)
    at = f"{where}: " if where else ""
    allowed = ("kind", *cls.keys)
    unknown = sorted(set(view) - set(allowed))
    if unknown:
        raise ViewSpecError(f"{at}unknown view option(s) {unknown} for a view of kind {cls.kind!r} "
                            f"(known: {', '.join(allowed)})")
    if frames is not None and "frames" not in cls.keys:
        raise ViewSpecError(f"{at}--frames is for video tasks (their view has 'frames'); this task's view is of kind "
                            f"{cls.kind!r}")
    if transform is not None and transform not in TRANSFORM_CHOICES:
        raise ViewSpecError(f"{at}--transform {transform!r} not in {TRANSFORM_CHOICES}")
    return cls.parse(view, where, transform=transform, frames=frames, default_transform=default_transform,
                     base_dir=None if base_dir is None else Path(base_dir))


def whole_number(view: Mapping[str, Any], key: str, where: str, default: int | None, minimum: int = 1) -> int | None:
    """``view[key]`` as a whole number >= ``minimum`` (``default`` when absent)."""
    if key not in view:
        return default
    value = view[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        at = f"{where}: " if where else ""
        raise ViewSpecError(f"{at}view.{key} must be a whole number >= {minimum}, got {value!r}")
    return value

