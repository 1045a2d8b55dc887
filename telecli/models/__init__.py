"""Networks. Every run records how to rebuild its network offline: a factory "package.module:function"
and JSON keyword arguments. Built-in networks use the factory ``telecli.models:build``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from telecli.config import ModelConfig
from telecli.errors import TelecliError

BUILTIN_FACTORY = "telecli.models:build"


def _registry():
    from telecli.models import cnn, features, mlp, poly, resnet20, transformer

    return {"mlp": mlp.MLP, "poly": poly.PolyNet, "features": features.RandomFeatures, "cnn": cnn.CNN,
            "resnet20": resnet20.ResNet20, "transformer": transformer.Transformer}


def build(name: str, input_shape: list[int], output_dim: int, init_scale: float = 1.0, **kwargs) -> nn.Module:
    """Build a built-in network; ``init_scale`` α multiplies every parameter (Omnigrok's large init)."""
    reg = _registry()
    if name not in reg:
        raise TelecliError(f"unknown model '{name}' (known: {', '.join(sorted(reg))}, or a factory)")
    net = reg[name](input_shape=list(input_shape), output_dim=int(output_dim), **kwargs)
    if init_scale != 1.0:
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(init_scale)
    return net


MOVED = {"telecli.pipelines.lmc:pretrained": "telecli.models.pretrained:pretrained",
         "telecli.jobs.lmc:pretrained": "telecli.models.pretrained:pretrained"}  # runs recorded before a move


def resolve_factory(path: str):
    """Import "package.module:function"; one-line error when it cannot be found."""
    path = MOVED.get(path, path)
    if ":" not in path:
        raise TelecliError(f"model factory must look like 'package.module:function', got '{path}'")
    mod_name, fn_name = path.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise TelecliError(f"cannot import model factory module '{mod_name}': {e}") from None
    fn = getattr(mod, fn_name, None)
    if fn is None or not callable(fn):
        raise TelecliError(f"module '{mod_name}' has no callable '{fn_name}' (model factory)")
    return fn


def instantiate(factory: str, kwargs: dict[str, Any]) -> nn.Module:
    net = resolve_factory(factory)(**kwargs)
    if not isinstance(net, nn.Module):
        raise TelecliError(f"model factory '{factory}' returned {type(net).__name__}, not a torch.nn.Module")
    return net


_SPEC_KEYS = {
    "mlp": ("depth", "width", "activation", "sigmoid"),
    "poly": ("epsilon", "hidden"),
    "cnn": ("channels", "sigmoid"),
    "resnet20": (),
    "features": ("width",),
    "transformer": ("d_model", "heads", "d_mlp", "blocks", "activation", "layernorm"),
}
MODELS = tuple(_SPEC_KEYS)  # the built-in model names of ModelConfig.name (besides "factory")


def model_spec(cfg: ModelConfig, input_shape: tuple[int, ...], output_dim: int) -> tuple[str, dict[str, Any]]:
    """(factory, kwargs) that rebuild the network of ``cfg`` offline."""
    if cfg.name == "factory" or cfg.factory:
        if not cfg.factory:
            raise TelecliError("model.name = 'factory' needs model.factory = 'package.module:function'")
        return cfg.factory, dict(cfg.kwargs)
    if cfg.name not in _SPEC_KEYS:
        raise TelecliError(f"unknown model '{cfg.name}' (known: {', '.join(sorted(_SPEC_KEYS))}, or a factory)")
    kwargs: dict[str, Any] = {"name": cfg.name, "input_shape": list(input_shape), "output_dim": int(output_dim)}
    kwargs.update({k: getattr(cfg, k) for k in _SPEC_KEYS[cfg.name]})
    kwargs["init_scale"] = cfg.init_scale
    kwargs.update(cfg.kwargs)
    return BUILTIN_FACTORY, kwargs
