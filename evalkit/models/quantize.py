"""int8 / int4 through bitsandbytes: which layers, how many bytes, and the layers themselves.

``int8`` (LLM.int8, ``Linear8bitLt`` with outlier threshold 6.0) and ``int4`` (NF4
``Linear4bit``, blocks of 64, double-quantised statistics) replace the Linear layers inside the
vision and text blocks; everything else (patch and token embeddings, position embeddings, norms,
the text tower's fused ``in_proj`` which is a bare parameter as in ``nn.MultiheadAttention``, and
the projection heads ``visual.head`` / ``text_projection``) is kept in fp16 on every device
(:attr:`Precision.dtype` of int8/int4). fp16 is what bitsandbytes' int8 kernels take as input
(it casts anything else to fp16), EVA-CLIP-18B is released and evaluated in fp16, and using the
same dtype on CPU and GPU means the CPU tests check the numerics a GPU run gets.

bitsandbytes is imported only when a quantised precision is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from evalkit.models.precision import PlacementError, Precision

__all__ = [
    "NO_SPLIT_MODULES",
    "INT8_THRESHOLD",
    "INT4_QUANT_TYPE",
    "INT4_BLOCKSIZE",
    "require_bitsandbytes",
    "import_bitsandbytes",
    "quantizable_linears",
    "quantized_weights",
    "quant_state_bytes",
    "special_dtypes",
    "replace_linears",
    "set_quantized_weight",
]

#: The transformer blocks: what int8/int4 quantise the Linear layers of, and what a device map
#: never splits over two devices.
NO_SPLIT_MODULES = ["VisionBlock", "TextBlock"]
INT8_THRESHOLD = 6.0  # LLM.int8 outlier threshold (Dettmers et al. 2022), bitsandbytes' default
INT4_QUANT_TYPE = "nf4"
INT4_BLOCKSIZE = 64

_BNB_HINT = "install a bitsandbytes build for this platform (pip install 'bitsandbytes>=0.45') or use --precision fp16"


def import_bitsandbytes(precision: str) -> Any:
    """bitsandbytes, or one clear :class:`PlacementError` saying why it cannot be imported."""
    try:
        import bitsandbytes as bnb
    except Exception as e:  # ImportError, or a broken native library raising anything at import
        raise PlacementError(
            f"--precision {precision} needs bitsandbytes, which cannot be imported ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}); {_BNB_HINT}"
        ) from e
    return bnb


def require_bitsandbytes(precision: str, device: str | int = "cpu") -> None:
    """Fail with one clear line unless bitsandbytes imports and quantises a tiny layer on ``device``."""
    hint = _BNB_HINT
    bnb = import_bitsandbytes(precision)
    try:
        with torch.no_grad():
            w = torch.linspace(-1, 1, 64 * 64).reshape(64, 64)
            if precision == "int8":
                layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False, threshold=INT8_THRESHOLD)
                layer.weight = bnb.nn.Int8Params(w.half(), requires_grad=False, has_fp16_weights=False)
            else:
                layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float16, quant_type=INT4_QUANT_TYPE)
                layer.weight = bnb.nn.Params4bit(w.half(), requires_grad=False, quant_type=INT4_QUANT_TYPE, module=layer)
            layer = layer.to(device)
            out = layer(torch.ones(2, 64, dtype=torch.float16, device=layer.weight.device))
            if not torch.isfinite(out).all():
                raise RuntimeError("non-finite output from a 64x64 test layer")
    except Exception as e:
        raise PlacementError(
            f"--precision {precision}: bitsandbytes {getattr(bnb, '__version__', '?')} does not work on "
            f"{device} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}); {hint}"
        ) from e


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` modules inside vision and text blocks: what int8/int4 replace."""
    out = []
    for name, module in model.named_modules():
        if type(module).__name__ in NO_SPLIT_MODULES:
            out += [f"{name}.{sub}" for sub, m in module.named_modules() if isinstance(m, nn.Linear)]
    return out


def quantized_weights(model: nn.Module, spec: Precision) -> set[str]:
    """The weight tensors ``spec`` quantises (none unless it is int8/int4)."""
    return {f"{m}.weight" for m in quantizable_linears(model)} if spec.quantized else set()


def special_dtypes(model: nn.Module, spec: Precision) -> dict[str, Any]:
    """accelerate's ``special_dtypes`` for sizing a device map: quantised weights at int8/int4."""
    if not spec.quantized:
        return {}
    from accelerate.utils import CustomDtype

    qdtype = torch.int8 if spec.quantized == "int8" else CustomDtype.INT4
    return dict.fromkeys(quantized_weights(model, spec), qdtype)


def quant_state_bytes(shape: Sequence[int], quantized: str) -> int:
    """bitsandbytes' side statistics: LLM.int8 keeps one fp32 scale per output row; NF4 keeps an
    8-bit absmax per block of 64 weights, whose own fp32 absmax comes per 256 blocks."""
    n = math.prod(shape)
    if quantized == "int8":
        return shape[0] * 4
    blocks = math.ceil(n / INT4_BLOCKSIZE)
    return blocks + math.ceil(blocks / 256) * 4 + 16 * 4  # + the 16-entry NF4 code book


def replace_linears(model: nn.Module, spec: Precision) -> None:
    """Swap the block Linear layers for bitsandbytes ones, on meta (accelerate's helper)."""
    from accelerate import init_empty_weights
    from accelerate.utils import BnbQuantizationConfig
    from accelerate.utils.bnb import replace_with_bnb_layers

    if spec.quantized == "int8":
        config = BnbQuantizationConfig(load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD, torch_dtype=spec.dtype)
    else:
        config = BnbQuantizationConfig(
            load_in_4bit=True, bnb_4bit_quant_type=INT4_QUANT_TYPE, bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype="fp16", torch_dtype=spec.dtype,
        )
    with init_empty_weights():
        for module in model.modules():
            if type(module).__name__ in NO_SPLIT_MODULES:
                replace_with_bnb_layers(module, config)
    model.is_loaded_in_8bit = spec.quantized == "int8"
    model.is_loaded_in_4bit = spec.quantized == "int4"


def set_quantized_weight(module: nn.Module, value: torch.Tensor, device: int | str, spec: Precision) -> None:
    """Quantise ``value`` on ``device`` with bitsandbytes and put it in ``module.weight``.

    (accelerate's ``set_module_tensor_to_device`` quantises int8 weights meant for the CPU on
    ``cuda:0`` first, which a CPU-only machine does not have; bitsandbytes' parameter classes
    quantise on whatever device they are moved to, so they are used directly.)
    """
    import bitsandbytes as bnb

    data = value.to("cpu", torch.float16).contiguous()
    if spec.quantized == "int8":
        param = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False).to(device)
    else:
        old = module.weight
        param = bnb.nn.Params4bit(
            data, requires_grad=False, blocksize=old.blocksize, compress_statistics=old.compress_statistics,
            quant_type=old.quant_type, quant_storage=old.quant_storage, module=module,
        ).to(device)
    module._parameters["weight"] = param
