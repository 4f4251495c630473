"""Backbones (through a registry) and the classifiers built on them."""

from .build import MODEL_KINDS, ModelConfig, ModelKind, build_model
from .classifier import CiiVClassifier, Classifier, ViewOutput, predict
from .external import ModelLoadError, load_user_model
from .registry import Backbone, create_model, list_models, register_model
from .smoothing import SmoothedClassifier
from .views import CentreView, MultiView, SupportsBPDA, SupportsIndependentDraws

__all__ = [
    "MODEL_KINDS",
    "Backbone",
    "CentreView",
    "CiiVClassifier",
    "Classifier",
    "ModelConfig",
    "ModelKind",
    "ModelLoadError",
    "MultiView",
    "SmoothedClassifier",
    "SupportsBPDA",
    "SupportsIndependentDraws",
    "ViewOutput",
    "build_model",
    "create_model",
    "list_models",
    "load_user_model",
    "predict",
    "register_model",
]

# Registers the built-in backbone families. Last, so that a backbone module may import anything
# above (from ciiv.models or its submodules); the registry itself imports no backbone.
from . import backbones  # noqa: E402, F401
