"""Model families: the registered loaders that turn a model card or a ``family:REF`` name into an
:class:`~evalkit.models.encoder.Encoder`.

A family is one object in :data:`evalkit.registry.model_loaders`, the registry plugins use too.
It validates a card's ``arch`` block (:meth:`ModelFamily.check_arch`), says which load options it
honours, and loads. evalkit's own (``eva_clip``, ``open_clip``, ``uni3d``: :mod:`evalkit.models.families`;
``hf``: :mod:`evalkit.models.hf`) are imported the first time a family is asked for, so this
module and the card list stay free of torch. A plugin's plain ``load_model(name, weights,
precision: str, device)`` function is wrapped as a family that honours no option
(:class:`PluginLoader`).

Options a family cannot honour are refused in one place, :meth:`ModelFamily.refuse`, from what
the family declares (``honours``, ``quantizes``, ``device_types``), before anything is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.models.hub import ModelLoadError
from evalkit.registry import UnknownNameError, model_loaders

if TYPE_CHECKING:
    from evalkit.models.encoder import Encoder
    from evalkit.models.precision import Precision
    from evalkit.models.zoo import ModelCard

__all__ = ["LoadOptions", "ModelFamily", "PluginLoader", "CardError", "BUILTIN_FAMILIES", "get_family",
           "family_names", "find_loader", "check_keys"]

#: evalkit's own families and the module that registers each (imported when first asked for).
#: ``hf`` (Hugging Face transformers models, ``hf:ORG/NAME``) is registered by evalkit.models.hf.
BUILTIN_FAMILIES: dict[str, str] = {
    "eva_clip": "evalkit.models.families",
    "open_clip": "evalkit.models.families",
    "uni3d": "evalkit.models.families",
    "hf": "evalkit.models.hf",
}


class CardError(ModelLoadError):
    """A model card that its family cannot take: the message names the card and the key."""


@dataclass(frozen=True)
class LoadOptions:
    """Everything a load may be asked beyond name, weights, precision and device, as one value.

    The big-model options (EVA-CLIP): ``devices`` (``0,1``, ``cpu``, ``auto``), ``max_memory``
    (``0=38GiB,cpu=64GiB``), ``allow_missing`` (fnmatch patterns of keys the checkpoint may
    lack), ``offload_dir``; ``batch_size`` sizes the activation reserve of a device map and
    ``progress`` shows weights loading (both hints: a family without them ignores them). The
    pairing options (Uni3D): ``text_model`` / ``text_weights``, the text tower a point encoder is
    scored with.
    """

    devices: str | None = None
    max_memory: str | Mapping[Any, Any] | None = None
    allow_missing: tuple[str, ...] = ()
    offload_dir: str | Path | None = None
    batch_size: int = 64
    progress: bool = False
    text_model: str | None = None
    text_weights: str | None = None

    #: the command-line flag of each option a family must honour or refuse
    FLAGS = {"devices": "--devices", "max_memory": "--max-memory", "offload_dir": "--offload-dir",
             "allow_missing": "--allow-missing", "text_model": "--text-model", "text_weights": "--text-weights"}
    BIG_MODEL = ("devices", "max_memory", "offload_dir", "allow_missing")
    PAIRING = ("text_model", "text_weights")

    def __post_init__(self) -> None:
        if isinstance(self.allow_missing, str):
            raise TypeError("LoadOptions.allow_missing: a sequence of patterns, not one string")
        object.__setattr__(self, "allow_missing", tuple(self.allow_missing))

    def given(self) -> tuple[str, ...]:
        """The options set (not left at their default) that a family must honour or refuse."""
        defaults = {f.name: f.default for f in fields(self)}
        return tuple(n for n in self.FLAGS if getattr(self, n) != defaults[n])


def check_keys(card: ModelCard, arch: Mapping[str, Any], required: Sequence[str], optional: Sequence[str] = (),
               types: Mapping[str, type | tuple[type, ...]] | None = None) -> None:
    """A card's ``arch`` block has each ``required`` key, no key beside ``required`` and
    ``optional``, and values of ``types``; else a :class:`CardError` naming the card and the key."""
    where = f"model card {card.name!r} (family {card.family})"
    if not isinstance(arch, Mapping):
        raise CardError(f"{where}: arch must be a mapping of keys, not {type(arch).__name__}")
    known = [*required, *optional]
    for key in arch:
        if key not in known:
            raise CardError(f"{where}: unknown arch key {key!r}; {card.family} takes {', '.join(known)}")
    for key in required:
        if key not in arch:
            raise CardError(f"{where}: arch key {key!r} is missing")
    for key, want in (types or {}).items():
        if key in arch and not isinstance(arch[key], want):
            names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise CardError(f"{where}: arch key {key!r} must be a {names}, not {type(arch[key]).__name__}")


class ModelFamily:
    """A registered model family. Subclasses set the class attributes and override the loaders.

    ``honours``: the :class:`LoadOptions` it can act on (of ``LoadOptions.FLAGS``);
    ``quantizes``: whether it runs int8/int4; ``device_types``: the ``--device`` kinds it loads
    on; ``runs``: how a refusal names what it loads (``an open_clip model``); ``ref_form`` /
    ``ref_help``: the ``FAMILY:REF`` names it takes as ``evalkit list models`` shows them
    (``open_clip:ARCH``; empty: it takes none)."""

    name: str = ""
    honours: frozenset[str] = frozenset()
    quantizes: bool = False
    device_types: frozenset[str] = frozenset({"cpu", "cuda", "mps"})
    runs: str = "this model"
    ref_form: str = ""
    ref_help: str = ""

    # -- what a card says ----------------------------------------------------------------------
    def check_arch(self, card: ModelCard) -> None:
        """Validate ``card.arch`` (a :class:`CardError` naming the card and key); nothing heavy."""
        check_keys(card, card.arch, (), ())

    def default_weights(self, card: ModelCard) -> str | None:
        """The weights ``card`` loads when none are given (a path shipped with evalkit, a tag);
        None: its released file on the Hub, or ``--weights`` needed."""
        return card.weights

    # -- the one place an option is refused ----------------------------------------------------
    def refuse(self, name: str, precision: Precision, device: str, options: LoadOptions) -> None:
        """Raise :class:`ModelLoadError` for the first option ``name`` (of this family) cannot
        honour: a pairing option, a big-model option or a quantised precision, a device kind."""
        unhonoured = [o for o in options.given() if o not in self.honours]
        if any(o in LoadOptions.PAIRING for o in unhonoured):
            raise ModelLoadError(f"{name}: --text-model/--text-weights pair a point encoder (uni3d-b ...) with a "
                                 f"text tower; {name} has its own")
        asked = [LoadOptions.FLAGS[o] for o in unhonoured if o in LoadOptions.BIG_MODEL]
        if precision.quantized and not self.quantizes:
            asked.append(f"--precision {precision.name}")
        if asked:
            lacking = [LoadOptions.FLAGS[o] for o in LoadOptions.BIG_MODEL if o not in self.honours]
            if not self.quantizes:
                lacking.append("--precision int8/int4")
            verb = "are" if len(lacking) > 1 else "is"
            use = ("takes --device and fp32/bf16/fp16/amp" if any(o not in self.honours for o in LoadOptions.BIG_MODEL)
                   else "runs at fp32, bf16, fp16 or amp")
            raise ModelLoadError(f"{name}: {', '.join(asked)}: {'/'.join(lacking)} {verb} for EVA-CLIP models "
                                 f"(eva-clip-18b, eva-clip-8b, ...); {self.runs} {use}")
        kind = device.split(":")[0]
        if options.devices is None and kind not in self.device_types:
            raise ModelLoadError(f"{name}: {self.runs} loads on {' or '.join(sorted(self.device_types))} "
                                 f"(--device {kind} is not supported)")

    # -- loading -------------------------------------------------------------------------------
    def load_card(self, card: ModelCard, weights: str | None, precision: Precision, device: str,
                  options: LoadOptions) -> Encoder:
        raise ModelLoadError(f"{card.name}: the {self.name} family loads no model cards")

    def load_ref(self, ref: str, weights: str | None, precision: Precision, device: str,
                 options: LoadOptions) -> Encoder:
        raise ModelLoadError(f"{self.name}:{ref}: the {self.name} family takes no '{self.name}:' names; "
                             f"see `evalkit list models`")


class PluginLoader(ModelFamily):
    """A plugin's ``load_model(name, weights, precision: str, device)``, as a family that honours
    no option: the plugin contract is those four arguments."""

    runs = "a plugin model"

    def __init__(self, name: str, fn: Callable[..., Encoder]) -> None:
        self.name, self.fn = name, fn

    def load_plugin(self, weights: str | None, precision: Precision, device: str) -> Encoder:
        return self.fn(name=self.name, weights=weights, precision=precision.name, device=device)


def _import_builtin(name: str) -> None:
    module = BUILTIN_FAMILIES.get(name)
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:  # the family's module is there but needs something missing: say so
            raise
        # the family's module is not part of this installation: the family is unknown


def find_loader(name: str) -> ModelFamily | None:
    """The family or plugin registered as ``name`` (a plugin function wrapped as a
    :class:`PluginLoader`), or None."""
    _import_builtin(name)
    if name not in model_loaders:
        return None
    obj = model_loaders.get(name)
    return obj if isinstance(obj, ModelFamily) else PluginLoader(name, obj)


def card_default_weights(card: ModelCard) -> str | None:
    """The weights ``card`` loads when none are given (its family says: a shipped path, an
    open_clip tag); None: its released file on the Hub, or --weights needed."""
    return get_family(card.family).default_weights(card)


def get_family(name: str) -> ModelFamily:
    """The registered model family ``name`` (evalkit's own imported on first use); an
    :class:`~evalkit.registry.UnknownNameError` when there is none."""
    found = find_loader(name)
    if found is None or isinstance(found, PluginLoader):
        raise UnknownNameError("model family", name, family_names())
    return found


def family_names() -> list[str]:
    """Every registered model family (evalkit's own and plugins' :class:`ModelFamily` objects)."""
    for name in BUILTIN_FAMILIES:
        _import_builtin(name)
    return [n for n, obj in model_loaders.items() if isinstance(obj, ModelFamily)]
