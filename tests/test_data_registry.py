"""Dataset registry: names, options, metadata, split assembly and missing-data errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ciiv.data import (
    DatasetInfo,
    DatasetNotFoundError,
    get_dataset_info,
    list_datasets,
    load_splits,
)

# Real data lives next to the repository (../shared/data), see the "data" marker.
MNIST_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
STATIC = [name for name in list_datasets() if name != "imagefolder"]  # metadata without files


def test_registry_lists_every_dataset():
    assert set(list_datasets()) == {
        "cifar10",
        "cifar100",
        "imagefolder",
        "mini-imagenet",
        "mnist",
        "shapes",
    }
    assert list_datasets() == sorted(list_datasets())


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: cifar10, cifar100, imagefolder"):
        load_splits("imagenet21k")
    with pytest.raises(ValueError, match="shapes"):
        get_dataset_info("svhn")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match=r"unknown option 'colour' \(valid: n_train, n_test, rho"):
        load_splits("shapes", colour=3)
    with pytest.raises(ValueError, match=r"unknown option 'image_size' \(valid: none\)"):
        get_dataset_info("cifar10", image_size=64)


@pytest.mark.parametrize("name", STATIC)
def test_static_info_is_consistent(name):
    info = get_dataset_info(name)
    assert isinstance(info, DatasetInfo)
    assert info.name == name
    assert len(info.mean) == len(info.std) == info.in_channels
    assert all(0.0 < m < 1.0 for m in info.mean) and all(0.0 < s < 1.0 for s in info.std)
    assert len(info.class_names) == len(set(info.class_names)) == info.num_classes
    assert 0 <= info.crop_padding < info.image_size // 2
    with pytest.raises(AttributeError):
        info.num_classes = 3  # frozen


@pytest.mark.parametrize(
    ("name", "spike_scale", "hflip", "size"),
    [
        ("cifar10", 0.9, True, 32),
        ("cifar100", 0.9, True, 32),
        ("shapes", 0.9, True, 32),
        ("mnist", 0.8, False, 28),
        ("mini-imagenet", 0.8, True, 64),
    ],
)
def test_spec_constants(name, spike_scale, hflip, size):
    info = get_dataset_info(name)
    assert info.spike_scale == spike_scale
    assert info.hflip is hflip
    assert info.image_size == size


def test_options_reach_info():
    assert get_dataset_info("mini-imagenet", image_size=84).crop_padding == 10
    info = get_dataset_info("shapes", num_classes=6, image_size=48)
    assert (info.num_classes, info.image_size) == (6, 48)


def test_shapes_splits_sizes_and_val_carving():
    splits = load_splits("shapes", n_train=400, n_test=100, val_fraction=0.25, seed=3)
    assert (len(splits.train), len(splits.val)) == (300, 100)
    assert set(splits.test) == {"iid", "shifted"}
    assert all(len(v) == 100 for v in splits.test.values())
    assert splits.info == get_dataset_info("shapes")
    # Stratified: 25 validation images per class (100 training images per class).
    assert torch.bincount(splits.val.labels).tolist() == [25, 25, 25, 25]


def test_splits_deterministic_for_a_seed():
    a = load_splits("shapes", n_train=200, n_test=40, seed=5)
    b = load_splits("shapes", n_train=200, n_test=40, seed=5)
    c = load_splits("shapes", n_train=200, n_test=40, seed=6)
    assert torch.equal(a.val.images, b.val.images)
    assert torch.equal(a.test["shifted"].images, b.test["shifted"].images)
    assert not torch.equal(a.train.images, c.train.images)


def test_val_fraction_rejected_when_dataset_ships_val(tmp_path):
    with pytest.raises(ValueError, match="ships its own validation split"):
        load_splits(
            "mini-imagenet",
            _tiny_imagenet(tmp_path),
            val_fraction=0.1,
            classes=("n00000001",),
            images_per_class=3,
            split=(1, 1, 1),
            image_size=8,
        )


def _tiny_imagenet(root: Path) -> Path:
    from PIL import Image

    folder = root / "n00000001"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_missing_torchvision_data_without_download(name, tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_splits(name, tmp_path / "empty", download=False)
    message = str(caught.value)
    assert str(tmp_path / "empty") in message
    assert "--data-dir" in message and "CIIV_DATA" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CIIV_DATA", str(tmp_path / "from-env"))
    with pytest.raises(DatasetNotFoundError, match="from-env"):
        load_splits("mnist", download=False)


def test_imagefolder_without_data_dir_says_what_to_pass():
    with pytest.raises(DatasetNotFoundError, match="imagefolder needs --data-dir"):
        load_splits("imagefolder")


@pytest.mark.data
@pytest.mark.skipif(
    not (MNIST_ROOT / "MNIST" / "raw").is_dir(), reason="no MNIST under shared/data"
)
def test_real_mnist():
    splits = load_splits("mnist", MNIST_ROOT, download=False)
    assert splits.train.images.shape == (54000, 1, 28, 28)
    assert splits.val.images.shape == (6000, 1, 28, 28)
    assert splits.test["test"].images.shape == (10000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8
    assert torch.bincount(splits.test["test"].labels).tolist()[:2] == [980, 1135]
    mean = splits.train.images[:5000].float().mean().item() / 255
    assert abs(mean - splits.info.mean[0]) < 0.01
