"""Backbone registry and families: contract, shapes, gradients, architecture depth, adapters.

Parametrised over ``list_models()``, so a newly registered backbone is tested automatically;
big networks get a small instance through ``SMALL_KWARGS`` and a small batch through ``BATCH``.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ciiv.deps import MissingDependency
from ciiv.models import registry
from ciiv.models.registry import (
    Backbone,
    check_model_dependencies,
    create_model,
    list_models,
    register_model,
)

NUM_CLASSES = 7
SMALL_KWARGS: dict[str, dict] = {"wrn34_10": {"depth": 10, "widen_factor": 1}}
BATCH: dict[str, int] = {"preact_resnet50": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def _small(name: str, in_channels: int) -> Backbone:
    return create_model(name, NUM_CLASSES, in_channels, **SMALL_KWARGS.get(name, {}))


def _assert_all_grads(model: nn.Module) -> None:
    for path, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {path}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {path}"
        assert p.grad.abs().sum() > 0, f"zero gradient in {path}"


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_backbone_contract_shapes_and_gradients(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    model = _small(name, in_channels)
    n = BATCH.get(name, 4)
    x = torch.randn(n, in_channels, 32, 32)
    y = torch.arange(n) % NUM_CLASSES

    assert isinstance(model, Backbone)
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (model.num_features, NUM_CLASSES)
    assert model.num_classes == NUM_CLASSES

    features = model.forward_features(x)
    assert features.shape == (n, model.num_features)
    logits = model(x)
    assert logits.shape == (n, NUM_CLASSES)
    # forward is exactly head(features): same batch, so train-mode BN statistics are identical.
    torch.testing.assert_close(logits, model.forward_head(features))

    F.cross_entropy(logits, y).backward()
    _assert_all_grads(model)


@pytest.mark.parametrize("name", list_models())
def test_backbone_accepts_mnist_and_64px_inputs(name: str) -> None:
    model = _small(name, 1).eval()
    for size in (28, 64):
        with torch.no_grad():
            features = model.forward_features(torch.randn(2, 1, size, size))
        assert features.shape == (2, model.num_features)


def _count_convs(model: nn.Module, kernel: int) -> int:
    """Convolutions of a kernel size on the main path (projection shortcuts excluded)."""
    return sum(
        isinstance(m, nn.Conv2d) and m.kernel_size == (kernel, kernel) and "shortcut" not in path
        for path, m in model.named_modules()
    )


@pytest.mark.parametrize(
    ("name", "kwargs", "depth", "num_features"),
    [
        ("preact_resnet18", {}, 18, 512),
        ("preact_resnet50", {}, 50, 2048),
        ("vgg13_bn", {}, 11, 512),  # 10 conv + our single head (the ImageNet VGG has 3 FC layers)
        ("wrn34_10", {}, 34, 640),
        ("wrn34_10", {"depth": 16, "widen_factor": 2}, 16, 128),
    ],
)
def test_architecture_depth_and_width(name: str, kwargs: dict, depth: int, num_features: int):
    """Weight layers on the main path + head = the name's depth. WRN-d counts its stem, 6n
    main-path convs and the head plus 2 of its 3 projection shortcuts (d = 6n + 4)."""
    model = create_model(name, **kwargs)
    assert model.num_features == num_features
    layers = _count_convs(model, 3) + _count_convs(model, 1) + 1
    assert layers == (depth - 2 if name == "wrn34_10" else depth)


def test_wrn_rejects_bad_depth_and_width() -> None:
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create_model("wrn34_10", depth=12, widen_factor=1)
    with pytest.raises(ValueError, match="widen_factor"):
        create_model("wrn34_10", depth=10, widen_factor=0)


def test_small_cnn_width() -> None:
    assert create_model("small_cnn", width=8).num_features == 32
    with pytest.raises(ValueError, match="width"):
        create_model("small_cnn", width=0)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        create_model("preact_resnet19")
    message = str(err.value)
    assert all(name in message for name in list_models())
    assert "'preact_resnet18'" in message  # close match suggested
    assert "tv:" in message and "timm:" in message
    with pytest.raises(ValueError, match="prefix 'foo'.*'tv:'"):
        create_model("foo:resnet18")


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": "3"}, "in_channels"),
    ],
)
def test_bad_sizes_raise(kwargs: dict, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        create_model("small_cnn", **kwargs)


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @register_model("tiny_linear")
    def tiny_linear(num_classes: int, in_channels: int) -> Backbone:
        features = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        return Backbone(features, num_features=in_channels, num_classes=num_classes)

    assert "tiny_linear" in list_models()
    assert create_model("tiny_linear", 3, 2)(torch.randn(5, 2, 8, 8)).shape == (5, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_linear")(tiny_linear)
    with pytest.raises(ValueError, match="':'"):
        register_model("tv:tiny")


def test_list_models_with_prefixes() -> None:
    names = list_models(include_prefixes=True)
    assert set(list_models()) <= set(names)
    assert "tv:resnet18" in names and "tv:vit_b_16" in names


@pytest.mark.parametrize(
    ("name", "classifier", "stem"),
    [("resnet18", "fc", "conv1"), ("mobilenet_v3_small", "classifier.3", "features.0.0")],
)
def test_torchvision_adapter_one_channel(name: str, classifier: str, stem: str) -> None:
    torch.manual_seed(0)
    model = create_model(f"tv:{name}", num_classes=NUM_CLASSES, in_channels=1)
    assert isinstance(model.features.get_submodule(classifier), nn.Identity)
    assert model.features.get_submodule(stem).in_channels == 1
    x = torch.randn(4, 1, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (4, model.num_features)
    logits = model(x)
    assert logits.shape == (4, NUM_CLASSES)
    F.cross_entropy(logits, torch.arange(4)).backward()
    _assert_all_grads(model)


def test_torchvision_adapter_feature_width() -> None:
    assert create_model("tv:resnet18").num_features == 512


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnt18", {}, "'resnet18'"),
        ("squeezenet1_0", {}, "no nn.Linear classifier"),
        ("googlenet", {"init_weights": True}, "aux_logits=False"),
        ("resnet18", {"weights": "DEFAULT"}, "weights=None"),
    ],
)
def test_torchvision_adapter_errors(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model(f"tv:{name}", **kwargs)


def test_timm_adapter() -> None:
    pytest.importorskip("timm")
    model = create_model("timm:resnet18", num_classes=NUM_CLASSES, in_channels=1)
    x = torch.randn(2, 1, 32, 32)
    assert model.forward_features(x).shape == (2, model.num_features)
    assert model(x).shape == (2, NUM_CLASSES)


def test_timm_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(MissingDependency, match=r'pip install "ciiv\[timm\]"'):
        create_model("timm:resnet18")
    # The check before a run writes anything says the same without importing timm.
    with pytest.raises(MissingDependency, match=r"backbone 'timm:resnet18'.*ciiv\[timm\]"):
        check_model_dependencies("timm:resnet18")
    check_model_dependencies("small_cnn")  # native names need nothing
    check_model_dependencies("tv:resnet18")  # torchvision is a core dependency
