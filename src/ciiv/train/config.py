"""The training configuration: typed dataclasses, parsed once from YAML + ``key=value`` overrides.

Precedence, lowest first: the dataclass defaults (the paper's CIFAR-10 setting, SPEC section 4),
a YAML file or a preset shipped in ``ciiv/configs`` (by name), then overrides such as
``optim.lr=0.05``. Unknown keys and bad values raise :class:`ConfigError` naming the key. Every
key is described in docs/training.md.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ciiv._checks import check_bounds
from ciiv._mapping import ConfigError, build_dataclass, check_keys
from ciiv.data import list_datasets
from ciiv.models import list_models
from ciiv.models.build import ModelConfig

from .methods import MethodConfig, get_method, switch_method

__all__ = [
    "ConfigError",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "build_dataclass",
    "config_from_dict",
    "config_to_dict",
    "find_yaml",
    "list_presets",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "save_config",
    "shipped_yaml",
]


@dataclass
class DataConfig:
    """Which data, and how it is split and augmented (docs/training.md).

    ``max_train`` / ``max_val`` keep a stratified subset of about this many training / validation
    examples (each class keeps its share), chosen by ``seed``; None keeps all.
    """

    dataset: str = "shapes"
    data_dir: str | None = None
    val_fraction: float | None = None
    seed: int = 0
    augment: bool = True
    download: bool = True
    max_train: int | None = None
    max_val: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction: must be in [0, 1) or null, got {self.val_fraction}")
        check_bounds(self, max_train=">= 1 or null", max_val=">= 1 or null")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (docs/training.md; the schedules: :mod:`.optim`)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    schedule: Literal["multistep", "cosine", "onecycle", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [10, 100, 105])
    gamma: float = 0.1
    warmup_fraction: float = 0.3

    def __post_init__(self) -> None:
        check_bounds(self, lr="> 0", momentum=">= 0", weight_decay=">= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {self.betas}")
        check_bounds(self, milestones="increasing epochs >= 0", gamma="> 0")
        if not 0 < self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction: must be in (0, 1), got {self.warmup_fraction}")


@dataclass
class TrainConfig:
    """Everything a training run depends on; the defaults are the paper's CIFAR-10 setting.
    Each key's meaning: the table in docs/training.md. ``batch_size`` is the global batch (DDP
    splits it evenly); ``eval_batch_size`` is per process."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 110
    batch_size: int = 128
    eval_batch_size: int = 500
    seed: int = 0
    device: str = "auto"
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool | Literal["backbone", "step"] = False
    deterministic: bool = False
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        # Messages are "key: ..."; parsing prefixes the section ("optim.lr: must be > 0").
        check_bounds(self, epochs=">= 1", batch_size=">= 1", eval_batch_size=">= 1", seed=">= 0")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ValueError(
                "checkpoint_every: must be >= 0 (optimiser steps; 0 or null: only at epoch ends), "
                f"got {self.checkpoint_every}"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device):
            raise ValueError(f"device: must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested dict (missing keys take the defaults)."""
    if not isinstance(values, dict):
        keys = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
        raise ConfigError(f"a config must be a mapping of {keys}")
    config = build_dataclass(TrainConfig, values)
    validate_config(config)
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as a nested dict of plain YAML/JSON types (``method``: ``{name, **options}``)."""
    return {**dataclasses.asdict(config), "method": config.method.to_dict()}


def _set_path(values: dict[str, Any], key: str, value: Any) -> None:
    """values[a][b][c] = value for key 'a.b.c', checking each level against the schema. Keys
    below a dict (``data.options``) or below ``method`` (they depend on the method) are checked
    when the whole config is parsed; ``method.name`` keeps the options the new method takes."""
    parts = key.split(".")
    if parts == ["method", "name"]:
        method = values.get("method") or {}
        if not isinstance(method, dict):
            raise ConfigError("method must be a mapping")
        values["method"] = switch_method(method, value)
        return
    cls: Any = TrainConfig  # the schema at this depth (None: free keys)
    node = values
    for depth, part in enumerate(parts):
        prefix = "".join(p + "." for p in parts[:depth])
        annotation = None
        if cls is not None:
            hints = typing.get_type_hints(cls)
            check_keys([part], hints, "config key", prefix)
            annotation = hints[part]
        if depth == len(parts) - 1:
            node[part] = value
            return
        nested = dataclasses.is_dataclass(annotation) or typing.get_origin(annotation) is dict
        if cls is not None and not nested:
            raise ConfigError(f"{prefix}{part} has no sub-keys (got {key!r})")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{prefix}{part} must be a mapping")
        schema = dataclasses.is_dataclass(annotation) and annotation is not MethodConfig
        cls = annotation if schema else None


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """['optim.lr=0.05', 'model.backbone=small_cnn'] -> [(key, value)], values parsed as YAML."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.lr=0.05")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
        parsed.append((key.strip(), value))
    return parsed


def shipped_yaml(folder: str) -> list[str]:
    """Names of the YAML files shipped in the package folder ``ciiv/<folder>``."""
    files = (resources.files("ciiv") / folder).iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def find_yaml(source: str | Path, folder: str = "configs", what: str = "preset") -> Path:
    """The YAML file for ``source``: an existing path, or the name of a file shipped in
    ``ciiv/<folder>`` (``what`` names those in the error, which lists them)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    name = str(source).removesuffix(".yaml")
    shipped = Path(str(resources.files("ciiv") / folder / f"{name}.yaml"))
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"{str(source)!r} is neither a file nor a {what}; {what}s: "
        f"{', '.join(shipped_yaml(folder))}"
    )


def list_presets() -> list[str]:
    """Names of the presets shipped in ``ciiv/configs`` (usable as ``--config NAME``)."""
    return shipped_yaml("configs")


def read_yaml(path: Path, what: str = "config", keys: str = "") -> dict[str, Any]:
    """The mapping in YAML file ``path`` ({} if empty); errors name it as ``what`` and may say
    which ``keys`` it should hold."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{what} {path} must be a YAML mapping{keys}, got {type(values).__name__}"
        )
    return values


def load_config(
    source: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | list[tuple[str, Any]] | dict[str, Any] | None = None,
) -> TrainConfig:
    """Parse a config: defaults <- ``source`` (preset name, YAML path or dict) <- ``overrides``,
    dotted keys as strings ``"optim.lr=0.05"`` (values parsed as YAML), ``(key, value)`` pairs or
    a ``{key: value}`` dict. ConfigError (naming the key) for an unknown preset, key or method,
    or a bad value."""
    if source is None:
        values: dict[str, Any] = {}
    elif isinstance(source, dict):
        values = copy.deepcopy(source)
    else:
        values = read_yaml(find_yaml(source))
    entries = overrides.items() if isinstance(overrides, dict) else overrides or []
    for entry in entries:
        key, value = parse_overrides([entry])[0] if isinstance(entry, str) else entry
        _set_path(values, key, value)
    return config_from_dict(values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (keys in schema order)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def validate_config(config: TrainConfig) -> None:
    """Registry and cross-section checks (each section checked its own ranges when built);
    raises :class:`ConfigError` naming the first bad key."""
    model, dataset = config.model, config.data.dataset
    if dataset not in list_datasets():
        valid = ", ".join(list_datasets())
        raise ConfigError(f"data.dataset: unknown dataset {dataset!r}; valid: {valid}")
    if ":" not in model.backbone and model.backbone not in list_models():
        raise ConfigError(
            f"model.backbone: unknown backbone {model.backbone!r}; valid: "
            f"{', '.join(list_models())} (or a prefixed name such as tv:resnet18)"
        )
    if get_method(config.method.name).model_kind == "ciiv" and model.num_views < 2:
        raise ConfigError(
            f"model.num_views: method {config.method.name!r} needs at least 2 views for its "
            "consistency loss"
        )
