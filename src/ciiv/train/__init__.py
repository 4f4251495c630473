"""Training: one ``fit()`` loop, a registry of methods, typed configs, resumable run directories.

Example::

    config = load_config("shapes-fast", ["method.name=ciiv", "epochs=3"])
    result = fit(config, "runs/shapes-ciiv")  # config.yaml, metrics.jsonl, checkpoints/
    run = load_run("runs/shapes-ciiv", "best")  # model + config + dataset info
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    ConfigError,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    save_config,
)
from .loop import FitResult, ProgressEvent, TrainingInterrupted, fit, resume
from .methods import (
    Objective,
    PGDOptions,
    StepContext,
    StepOutput,
    create_method,
    get_method,
    list_methods,
    register_method,
)
from .run import (
    RESUMABLE_KEYS,
    LoadedRun,
    RunDirError,
    RunDirExistsError,
    load_data,
    load_run,
    resolve_device,
    saved_config,
)

__all__ = [
    "RESUMABLE_KEYS",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "FitResult",
    "LoadedRun",
    "MethodConfig",
    "ModelConfig",
    "Objective",
    "OptimConfig",
    "PGDOptions",
    "ProgressEvent",
    "RunDirError",
    "RunDirExistsError",
    "StepContext",
    "StepOutput",
    "TrainConfig",
    "TrainingInterrupted",
    "config_from_dict",
    "config_to_dict",
    "create_method",
    "fit",
    "get_method",
    "list_methods",
    "list_presets",
    "load_checkpoint",
    "load_config",
    "load_data",
    "load_run",
    "register_method",
    "resolve_device",
    "resume",
    "save_checkpoint",
    "save_config",
    "saved_config",
]
