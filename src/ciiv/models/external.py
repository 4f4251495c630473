"""A user's own model, named by a string, for ``ciiv eval --model`` / ``ciiv audit --model``.

Specs and weight files are described in docs/evaluation.md ("Evaluating your own defense"):
``my_pkg.module:factory``, ``path/to/defense.py:build``, ``timm:<name>`` or ``tv:<name>``; the model
maps pixels [B, C, H, W] in [0, 1] to logits [B, K] and comes back in eval mode, on the CPU.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import pickle
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .classifier import Classifier
from .registry import unknown_name_message

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelLoadError",
    "describe_user_model",
    "load_user_model",
    "probe_model",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keys under which training scripts nest the state dict (timm: "state_dict", torchvision's
# reference scripts: "model"); tried in this order.
_NESTED_KEYS = ("state_dict", "model")
_SHOWN_KEYS = 5  # keys listed in a mismatch message before "(+n more)"


class ModelLoadError(ValueError):
    """A user's model could not be built or its weights loaded; the message says what to do."""


def weights_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a weights file (recorded so that a resumed evaluation refuses
    other weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_user_model(spec: str, weights: str | Path | None = None) -> dict[str, Any]:
    """What identifies a user's model: ``{"spec", "weights_sha256"}`` (None without weights).
    The weights' path is left out: a moved file is the same model, other bytes are not."""
    return {
        "spec": spec,
        "weights_sha256": None if weights is None else weights_sha256(weights),
    }


def load_user_model(
    spec: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    *,
    in_channels: int = 3,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> nn.Module:
    """Build the model named by ``spec`` and load ``weights`` into it (see the module docstring).

    ``num_classes`` (K) goes to a factory that takes it and is required for ``timm:`` / ``tv:``
    models, which also take ``in_channels`` and a per-channel (mean, std) ``normalization`` applied
    in front: None is the library's convention (timm's ``pretrained_cfg`` mean/std, ImageNet's for
    torchvision), ``((0,) * C, (1,) * C)`` feeds raw pixels; a factory's model owns its
    preprocessing, so it takes none. Raises ModelLoadError (saying what to do) for anything that
    keeps the model from being built or its weights loaded.
    """
    prefix, sep, name = spec.partition(":")
    if sep and prefix in _BACKBONES:
        if num_classes is None:
            raise ModelLoadError(f"{spec}: num_classes is required for {prefix}: models")
        model, default_norm = _BACKBONES[prefix](name, num_classes, in_channels)
        if weights is not None:
            _load_weights(model, weights)
        mean, std = default_norm if normalization is None else normalization
        model = _normalised(model, mean, std, in_channels, spec)
    else:
        if normalization is not None:
            raise ModelLoadError(
                f"{spec}: a normalisation applies to timm: / tv: models only; a factory's model "
                "takes pixels in [0, 1] and normalises them itself"
            )
        model = _call_factory(_resolve(spec), spec, num_classes)
        if weights is not None:
            _load_weights(model, weights)
    return model.eval()


def probe_model(model: nn.Module, x: Tensor) -> None:
    """One forward pass on a few images x [b, C, H, W] in [0, 1]: a model that fails on them (a
    wrong image size or channel count, an error in its code) raises a ModelLoadError naming the
    shape, instead of failing inside the first attack."""
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # the user's code may raise anything
        raise ModelLoadError(
            f"the model failed on images of shape {tuple(x.shape)} ({type(err).__name__}: "
            f"{_first_line(err)}); it must take pixels [B, C, H, W] in [0, 1] of the dataset"
        ) from err
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelLoadError(f"the model must return logits [B, K]; it returned {shape}")


# --- factories --------------------------------------------------------------------------------


def _resolve(spec: str) -> Callable[..., Any]:
    """The callable named by ``module:attr`` or ``file.py:attr``."""
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr:
        raise ModelLoadError(
            f"model spec {spec!r} needs a factory after a colon: my_pkg.module:build, "
            "path/to/defense.py:build, timm:<name> or tv:<name>"
        )
    if source.endswith(".py") or "/" in source or "\\" in source:
        holder = _import_file(Path(source))
    else:
        try:
            holder = importlib.import_module(source)
        except ModuleNotFoundError as err:
            raise ModelLoadError(
                f"cannot import module {source!r} ({err}); install it, run from the folder that "
                "holds it, or name a file: path/to/file.py:factory"
            ) from err
        except Exception as err:
            raise ModelLoadError(
                f"importing {source!r} failed ({type(err).__name__}: {_first_line(err)})"
            ) from err
    obj: Any = holder
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(holder).items() if callable(v) and n[0] != "_")
            raise ModelLoadError(
                f"{source} has no attribute {attr!r}; its callables: {', '.join(public) or 'none'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError(f"{spec}: {attr} is a {type(obj).__name__}, not a callable")
    return obj


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    resolved = path.resolve()
    # One module name per file (so that importing it twice gives the same module), never one
    # that could shadow a real module.
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    name = f"ciiv_user_{re.sub(r'[^0-9A-Za-z_]', '_', resolved.stem)}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ModelLoadError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before it runs (dataclasses and pickling look the module up); its folder is on
    # sys.path while it runs, so that it can import the modules next to it.
    sys.modules[name] = module
    folder = str(resolved.parent)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ModelLoadError(
            f"importing {path} failed ({type(err).__name__}: {_first_line(err)})"
        ) from err
    finally:
        sys.path.remove(folder)
    return module


def _call_factory(factory: Callable[..., Any], spec: str, num_classes: int | None) -> nn.Module:
    kwargs = {}
    if num_classes is not None and _accepts(factory, "num_classes"):
        kwargs["num_classes"] = num_classes
    try:
        model = factory(**kwargs)
    except Exception as err:
        given = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "no arguments"
        raise ModelLoadError(
            f"{spec} failed when called with {given} ({type(err).__name__}: {_first_line(err)}); "
            "a factory takes no required arguments (num_classes is passed when it accepts it)"
        ) from err
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"{spec} returned a {type(model).__name__}; it must return a torch.nn.Module"
        )
    return model


def _accepts(fn: Callable[..., Any], keyword: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == keyword and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in params
    )


# --- timm: and tv: architectures ----------------------------------------------------------------


def _timm_model(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, tuple]:
    from .backbones.timm_adapter import _timm

    try:
        timm = _timm(name)
    except (ImportError, ValueError) as err:
        raise ModelLoadError(str(err)) from None
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return model, (
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
    )


def _tv_model(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, tuple]:
    import torchvision

    from .backbones.torchvision_adapter import torchvision_names

    valid = torchvision_names()
    if name not in valid:
        raise ModelLoadError(unknown_name_message("torchvision model", name, valid))
    if in_channels != 3:
        raise ModelLoadError(
            f"tv:{name} takes 3-channel images and the dataset has {in_channels}; wrap the model "
            "in a factory (file.py:build) that adapts its stem"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return model, (IMAGENET_MEAN, IMAGENET_STD)


_BACKBONES: dict[str, Callable[[str, int, int], tuple[nn.Module, tuple]]] = {
    "timm": _timm_model,
    "tv": _tv_model,
}


def _normalised(
    model: nn.Module, mean: Sequence[float], std: Sequence[float], channels: int, spec: str
) -> nn.Module:
    """``model`` behind a (x - mean) / std layer that takes pixels in [0, 1]. RGB constants for a
    one-channel dataset are averaged (a grey image has equal channels)."""
    if len(mean) != channels and channels == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    if len(mean) != channels or len(std) != channels:
        raise ModelLoadError(
            f"{spec}: normalisation mean/std have {len(mean)}/{len(std)} values for "
            f"{channels} channels"
        )
    return Classifier(model, mean, std)  # type: ignore[arg-type]  (any logits module works)


# --- weights ------------------------------------------------------------------------------------


def _load_weights(model: nn.Module, weights: str | Path) -> None:
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the refused class ("Unsupported global: ..."); anything else is garbage.
        if "unsupported global" in str(err).lower():
            raise ModelLoadError(
                f"{path} holds Python objects that torch.load(weights_only=True) refuses (e.g. "
                "a whole pickled model); save model.state_dict() instead"
            ) from err
        raise ModelLoadError(
            f"{path} is not a readable torch.save file (corrupt, or another format)"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise ModelLoadError(
            f"{path} is not a readable torch.save file (corrupt or truncated: {_first_line(err)})"
        ) from err
    state = _state_dict(obj, path)
    expected = model.state_dict()
    if set(state) != set(expected) and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"{what}: {_listed(keys)}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch (file vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        raise ModelLoadError(
            f"the weights in {path} do not fit the model: {'; '.join(problems)}. Use the "
            "architecture (and number of classes) they were trained with"
        )
    model.load_state_dict(state)
    logger.info("loaded %d tensors from %s", len(state), path)


def _state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside what ``torch.load`` returned."""
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
            return dict(obj)
        kinds = sorted({type(v).__name__ for v in obj.values()})
        raise ModelLoadError(
            f"{path} holds a dict of {', '.join(kinds) or 'nothing'}, not a state dict; save "
            f"model.state_dict(), or a dict holding it under {' or '.join(map(repr, _NESTED_KEYS))}"
        )
    raise ModelLoadError(
        f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict()"
    )


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
