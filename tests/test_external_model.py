"""`load_user_model`: a user's model from a spec string, its weights, and every refusal."""

import sys
import textwrap

import pytest
import torch
from torch import nn

from ciiv.models.external import (
    IMAGENET_MEAN,
    ModelLoadError,
    describe_user_model,
    load_user_model,
    probe_model,
    weights_sha256,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DEFENSE = textwrap.dedent(
    """
    import torch
    from torch import nn

    from helper import hidden_width  # a module next to this file


    class Defense(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, hidden_width()))
            self.head = nn.Linear(hidden_width(), num_classes)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

        @classmethod
        def create(cls):
            return cls(num_classes=5)


    def build(num_classes):
        return Defense(num_classes)


    def build_fixed():
        return Defense()


    def not_a_model():
        return 42


    def broken(num_classes):
        raise RuntimeError("cannot build")
    """
)


@pytest.fixture
def defense(tmp_path):
    folder = tmp_path / "defenses"
    folder.mkdir()
    (folder / "defense.py").write_text(DEFENSE)
    (folder / "helper.py").write_text("def hidden_width():\n    return 16\n")
    return folder / "defense.py"


def _weights(defense, path, num_classes=4, wrap=None, prefix=""):
    model = load_user_model(f"{defense}:build", num_classes=num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save(state if wrap is None else {wrap: state, "epoch": 7}, path)
    return model


def test_a_file_factory_gets_num_classes_and_imports_its_neighbours(defense):
    model = load_user_model(f"{defense}:build", num_classes=7)
    assert not model.training
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 7)
    # A factory without num_classes is called without it; dotted attributes resolve.
    assert load_user_model(f"{defense}:build_fixed", num_classes=7).head.out_features == 3
    assert load_user_model(f"{defense}:Defense.create").head.out_features == 5
    assert str(defense.parent) not in sys.path  # only while the file was imported


def test_a_module_factory_resolves_on_sys_path(defense, monkeypatch):
    monkeypatch.syspath_prepend(str(defense.parent))
    model = load_user_model("defense:build", num_classes=2)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 2)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_weights_load_exactly_from_every_accepted_layout(defense, tmp_path, wrap):
    reference = _weights(defense, tmp_path / "w.pt", wrap=wrap)
    loaded = load_user_model(f"{defense}:build", tmp_path / "w.pt", num_classes=4)
    x = torch.rand(3, 3, 8, 8)
    assert torch.equal(loaded(x), reference.eval()(x))


def test_a_data_parallel_prefix_is_removed(defense, tmp_path):
    reference = _weights(defense, tmp_path / "w.pt", prefix="module.")
    loaded = load_user_model(f"{defense}:build", tmp_path / "w.pt", num_classes=4)
    assert torch.equal(loaded.head.weight, reference.head.weight)


def test_the_weights_digest_identifies_the_file(defense, tmp_path):
    import hashlib

    _weights(defense, tmp_path / "w.pt")
    digest = hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    assert weights_sha256(tmp_path / "w.pt") == digest
    assert describe_user_model("d.py:build", tmp_path / "w.pt")["weights_sha256"] == digest
    assert describe_user_model("d.py:build")["weights_sha256"] is None


def test_weight_files_that_do_not_fit_are_refused_with_the_keys(defense, tmp_path):
    _weights(defense, tmp_path / "w.pt", num_classes=4)
    spec = f"{defense}:build"
    mismatch = r"shape mismatch.*head\.weight \(4, 16\) vs \(6, 16\)"
    with pytest.raises(ModelLoadError, match=mismatch):
        load_user_model(spec, tmp_path / "w.pt", num_classes=6)
    state = torch.load(tmp_path / "w.pt")
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError) as info:
        load_user_model(spec, tmp_path / "odd.pt", num_classes=4)
    assert "missing keys: head.bias" in str(info.value)
    assert "unexpected keys: extra.weight" in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"not a torch file at all", "not a readable torch.save file"),
        ("module", r"weights_only=True\) refuses"),
        ({"epoch": 3, "lr": 0.1}, "not a state dict"),
        ([torch.zeros(1)], "holds a list, not a state dict"),
    ],
)
def test_unreadable_weights_are_refused_with_what_to_do(defense, tmp_path, content, message):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "module":
        torch.save(nn.Linear(2, 2), path)  # a whole pickled module
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ModelLoadError, match=message):
        load_user_model(f"{defense}:build", path, num_classes=4)


def test_a_truncated_weights_file_is_refused(defense, tmp_path):
    _weights(defense, tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_user_model(f"{defense}:build", tmp_path / "cut.pt", num_classes=4)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("defense.py", "needs a factory after a colon"),
        ("{d}:missing", "has no attribute 'missing'; its callables: Defense, broken, build"),
        ("{d}:not_a_model", "returned a int; it must return a torch.nn.Module"),
        ("{d}:broken", "failed when called with num_classes=4 .RuntimeError: cannot build"),
        ("{folder}/absent.py:build", "does not exist"),
        ("ciiv_no_such_package.models:build", "cannot import module 'ciiv_no_such_package"),
        ("tv:resnet_does_not_exist", "unknown torchvision model"),
    ],
)
def test_bad_specs_are_refused_with_what_is_valid(defense, spec, message):
    spec = spec.format(d=defense, folder=defense.parent)
    with pytest.raises(ModelLoadError, match=message):
        load_user_model(spec, num_classes=4)


def test_normalisation_is_refused_for_a_factory(defense):
    with pytest.raises(ModelLoadError, match="timm: / tv: models only"):
        load_user_model(f"{defense}:build", num_classes=4, normalization=((0.5,), (0.5,)))


def test_torchvision_models_load_their_own_checkpoints_behind_a_normalisation(tmp_path):
    import torchvision

    native = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()
    torch.save({"model": native.state_dict(), "epoch": 90}, tmp_path / "r18.pt")
    model = load_user_model("tv:resnet18", tmp_path / "r18.pt", num_classes=10)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    assert torch.allclose(model(x), native((x - mean) / std), atol=1e-5)
    identity = ((0.0,) * 3, (1.0,) * 3)
    raw = load_user_model("tv:resnet18", tmp_path / "r18.pt", 10, normalization=identity)
    assert torch.allclose(raw(x), native(x), atol=1e-5)
    with pytest.raises(ModelLoadError, match="3-channel images and the dataset has 1"):
        load_user_model("tv:resnet18", num_classes=10, in_channels=1)


def test_a_missing_timm_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ModelLoadError) as info:
        load_user_model("timm:resnet18", num_classes=10)
    message = str(info.value)
    assert 'pip install "ciiv[timm]"' in message and "\n" not in message


def test_timm_models_build_with_the_dataset_classes_and_channels():
    pytest.importorskip("timm")
    model = load_user_model("timm:resnet18", num_classes=4, in_channels=1)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)


def test_probe_names_the_shape_the_model_failed_on(defense):
    model = load_user_model(f"{defense}:build", num_classes=4)
    probe_model(model, torch.rand(2, 3, 8, 8))
    with pytest.raises(ModelLoadError, match=r"failed on images of shape \(2, 3, 16, 16\)"):
        probe_model(model, torch.rand(2, 3, 16, 16))
    with pytest.raises(ModelLoadError, match="must return logits"):
        probe_model(nn.Flatten(0), torch.rand(2, 3, 8, 8))
