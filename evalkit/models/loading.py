"""``load(name, ...)``: a model name -> an Encoder, through the registered model families (the
package re-exports it as ``evalkit.models.load``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.models.family import (
    LoadOptions,
    ModelFamily,
    PluginLoader,
    family_names,
    find_loader,
    get_family,
)
from evalkit.models.hub import ModelLoadError
from evalkit.models.precision import DEFAULT_PRECISION, PlacementError, Precision, parse_precision
from evalkit.models.zoo import CARDS, CLAIM_ONLY
from evalkit.registry import UnknownNameError, model_loaders

if TYPE_CHECKING:
    from evalkit.models.encoder import Encoder


def list_models(all: bool = False) -> list[tuple[str, str]]:
    """(name, description) of every loadable model: the cards, each family's ``FAMILY:REF`` form,
    the plugins; ``all``: also the models the paper compares whose weights were never released
    (``claim-only: why``)."""
    out = [(c.name, c.description) for c in CARDS.values()]
    for name in family_names():
        fam = get_family(name)
        if fam.ref_form:
            out.append((fam.ref_form, fam.ref_help))
    out += [(n, "plugin") for n, obj in model_loaders.items() if not isinstance(obj, ModelFamily)]
    if all:
        out += [(m.name, f"claim-only ({m.paper_name}, {m.tables}): {m.why}") for m in CLAIM_ONLY.values()]
    return out


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"--device {device}: expected cpu, cuda or cuda:N")


def load(
    name: str,
    weights: str | None = None,
    precision: str | Precision = DEFAULT_PRECISION,
    device: str = "cpu",
    options: LoadOptions | None = None,
) -> Encoder:
    """Build the model called ``name`` and wrap it as an Encoder.

    ``options`` (:class:`~evalkit.models.family.LoadOptions`): the big-model options (devices,
    max memory, keys the checkpoint may lack, offload folder, the batch the activation reserve is
    sized for, loading progress) and a point encoder's text tower (``text_model``,
    ``text_weights``). The model's family refuses any it cannot honour, before anything is read.
    """
    options = options if options is not None else LoadOptions()
    try:
        spec = parse_precision(precision)  # the one parse; everything below gets the Precision
    except PlacementError as e:
        raise ModelLoadError(str(e)) from None
    if options.devices is None:
        _check_device(device)
    if name in CLAIM_ONLY:
        m = CLAIM_ONLY[name]
        raise ModelLoadError(f"{name}: claim-only ({m.paper_name}, {m.tables}): {m.why}; its claims are listed, "
                             f"never verified")
    card = CARDS.get(name)
    if card is not None:
        fam = get_family(card.family)
        fam.check_arch(card)
        fam.refuse(name, spec, device, options)
        return fam.load_card(card, weights, spec, device, options)
    prefix, colon, ref = name.partition(":")
    loader = find_loader(prefix) if colon else None
    if loader is not None and not isinstance(loader, PluginLoader):
        loader.refuse(name, spec, device, options)
        return loader.load_ref(ref, weights, spec, device, options)
    loader = find_loader(name)
    if isinstance(loader, PluginLoader):
        # plugins get the name, as their contract (load_model(name, weights, precision: str, device)) says
        loader.refuse(name, spec, device, options)
        return loader.load_plugin(weights, spec, device)
    if loader is not None:
        raise ModelLoadError(f"{name} is a model family: name one of its cards"
                             + (f" or {loader.ref_form}" if loader.ref_form else "")
                             + " (see `evalkit list models`)")
    known = [*CARDS, *(n for n, obj in model_loaders.items() if not isinstance(obj, ModelFamily)),
             *(f"{f}:" for f in family_names())]
    raise UnknownNameError("model", name, known)
