"""``imagefolder``: trees and archives, atomic extraction, decoded cache, statistics."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import ciiv.data.cache
import ciiv.data.imagefolder
from ciiv.cli import main
from ciiv.data import DatasetNotFoundError, load_splits
from ciiv.data.tensors import channel_stats
from ciiv.data.torchvision_sets import CIFAR10_INFO

# Real data lives next to the repository (../shared/data), see the "data" marker.
CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg-q75.tar.gz"
CLASSES = ("cat", "dog", "eel")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIIV_CACHE", str(tmp_path / "cache"))


def _colour(label: int, index: int) -> tuple[int, int, int]:
    """Each fake image is one flat colour that encodes its class and index."""
    return (40 * label + 10, 20 * index + 5, 200 - 30 * label)


def _make_tree(root: Path, train: int = 6, test: int = 2, size: int = 8) -> Path:
    for split, count, classes in (("train", train, CLASSES), ("test", test, CLASSES[:2])):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                fmt = "bmp" if i == 0 else "png"  # more than one format
                Image.new("RGB", (size, size), _colour(label, i)).save(folder / f"{i:03d}.{fmt}")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def _make_archive(tree: Path, archive: Path, wrapper: str | None = "mydata") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tree / split, arcname=f"{wrapper}/{split}" if wrapper else split)
    return archive


def test_tree_loads_with_labels_and_statistics(tmp_path):
    tree = _make_tree(tmp_path / "tree")
    splits = load_splits("imagefolder", tree, val_fraction=0.34, seed=0)
    info = splits.info
    assert info.class_names == CLASSES and info.num_classes == 3
    assert (info.image_size, info.in_channels, info.crop_padding) == (8, 3, 1)
    assert (len(splits.train), len(splits.val)) == (12, 6)  # 2 of 6 per class to val
    assert torch.bincount(splits.test["test"].labels).tolist() == [2, 2]  # test: subset of classes
    for part in (splits.train, splits.val, splits.test["test"]):
        red = part.images[:, 0, 0, 0].long()
        assert torch.equal(red, 40 * part.labels + 10)  # each image carries its own label
    everything = torch.cat([splits.train.images, splits.val.images])
    assert (info.mean, info.std) == channel_stats(everything)  # statistics of the training tree


def test_options_override_statistics_and_resize(tmp_path):
    tree = _make_tree(tmp_path / "tree")
    splits = load_splits(
        "imagefolder", tree, image_size=4, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2], hflip=False
    )
    assert splits.train.images.shape[1:] == (3, 4, 4)
    assert splits.info.mean == (0.5, 0.5, 0.5) and splits.info.hflip is False
    with pytest.raises(ValueError, match="both mean and std"):
        load_splits("imagefolder", tree, mean=[0.5, 0.5, 0.5])


def test_archive_is_extracted_once_and_decoded_once(tmp_path, monkeypatch):
    archive = _make_archive(_make_tree(tmp_path / "tree"), tmp_path / "mydata.tar.gz")
    first = load_splits("imagefolder", archive)
    extracted = list((tmp_path / "cache" / "extracted").iterdir())
    assert len(extracted) == 1 and extracted[0].name.startswith("mydata-")

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(ciiv.data.cache.tarfile, "open", fail)
    monkeypatch.setattr(ciiv.data.imagefolder, "decode_images", fail)
    second = load_splits("imagefolder", archive)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test["test"].labels, second.test["test"].labels)
    assert first.info == second.info


def test_archive_without_wrapper_folder(tmp_path):
    archive = _make_archive(_make_tree(tmp_path / "tree"), tmp_path / "flat.tgz", wrapper=None)
    assert load_splits("imagefolder", archive).info.num_classes == 3


def test_interrupted_extraction_leaves_nothing(tmp_path):
    tree = _make_tree(tmp_path / "tree", train=40)
    archive = _make_archive(tree, tmp_path / "broken.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])  # truncated mid-stream
    with pytest.raises(ValueError, match=f"cannot extract {archive}: it is truncated or not a"):
        load_splits("imagefolder", archive)
    assert list((tmp_path / "cache" / "extracted").iterdir()) == []


def test_an_archive_that_is_not_gzip_is_a_clear_error(tmp_path, capsys):
    archive = tmp_path / "data.tar.gz"
    archive.write_text("plain text, not gzip")
    with pytest.raises(ValueError, match=r"not a \.tar\.gz archive \(.*not a gzip file"):
        load_splits("imagefolder", archive)
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(archive), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot extract {archive}" in err and "Traceback" not in err


def test_changed_tree_is_decoded_again(tmp_path):
    tree = _make_tree(tmp_path / "tree")
    assert len(load_splits("imagefolder", tree, val_fraction=0.0).train) == 18
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tree / "train" / "eel" / "new.png")
    assert len(load_splits("imagefolder", tree, val_fraction=0.0).train) == 19


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    tree = _make_tree(tmp_path / "tree")
    first = load_splits("imagefolder", tree)
    (cache_file,) = (tmp_path / "cache" / "decoded").iterdir()
    cache_file.write_bytes(b"garbage")
    assert torch.equal(load_splits("imagefolder", tree).train.images, first.train.images)


def test_sizes_must_agree_without_image_size(tmp_path):
    tree = _make_tree(tmp_path / "tree")
    Image.new("RGB", (9, 9)).save(tree / "train" / "dog" / "odd.png")
    with pytest.raises(ValueError, match="image_size"):
        load_splits("imagefolder", tree)
    assert load_splits("imagefolder", tree, image_size=8).info.image_size == 8


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda t: (t / "test" / "fox").mkdir(), ValueError, "not among the training classes"),
        (lambda t: (t / "train" / "empty").mkdir(), ValueError, "no image files"),
        (lambda t: (t / "test" / "cat" / "000.bmp").write_bytes(b"xx"), ValueError, "decode"),
    ],
)
def test_bad_trees_explain_themselves(tmp_path, mutate, error, match):
    tree = _make_tree(tmp_path / "tree")
    mutate(tree)
    with pytest.raises(error, match=match):
        load_splits("imagefolder", tree)


def test_missing_layout(tmp_path):
    (tmp_path / "nothing" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no train/ and test/"):
        load_splits("imagefolder", tmp_path / "nothing")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_splits("imagefolder", tmp_path / "absent")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPEG.is_file(), reason="no CIFAR-10 JPEG archive under shared/data")
def test_real_cifar10_jpeg_archive():
    splits = load_splits("imagefolder", CIFAR_JPEG)
    info = splits.info
    assert info.num_classes == 10 and info.class_names[0] == "airplane"
    assert (len(splits.train), len(splits.val), len(splits.test["test"])) == (45000, 5000, 10000)
    assert splits.train.images.shape[1:] == (3, 32, 32)
    # JPEG q75 barely moves the CIFAR-10 statistics.
    assert all(abs(a - b) < 0.01 for a, b in zip(info.mean, (0.4914, 0.4822, 0.4465), strict=True))


# --- CIFAR-10 / CIFAR-100 from an image-folder copy -------------------------------------------

CIFAR10_NAMES = CIFAR10_INFO.class_names


def _cifar_tree(root: Path, names=CIFAR10_NAMES, order=None, fmt: str = "png", size: int = 32):
    """A tiny CIFAR-shaped tree: 3 train and 1 test image per class; red channel = class index
    in CIFAR's canonical order, so labels can be checked whatever the folder order."""
    for split, count in (("train", 3), ("test", 1)):
        for name in order or names:
            folder = root / split / name
            folder.mkdir(parents=True)
            label = names.index(name) if name in names else 0
            for i in range(count):
                Image.new("RGB", (size, size), (label * 20, i * 50, 7)).save(folder / f"{i}.{fmt}")
    return root


def _no_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("an image-folder copy must never reach torchvision")

    monkeypatch.setattr(ciiv.data.torchvision_sets, "_open", fail)


def test_cifar10_from_a_folder_keeps_canonical_labels_and_constants(tmp_path, monkeypatch):
    _no_download(monkeypatch)
    tree = _cifar_tree(tmp_path / "cifar", order=list(reversed(CIFAR10_NAMES)))
    splits = load_splits("cifar10", tree, val_fraction=0.0)
    assert splits.info == CIFAR10_INFO  # normalisation, spike scale, class names
    assert (len(splits.train), len(splits.test["test"])) == (30, 10)
    for part in (splits.train, splits.test["test"]):
        assert torch.equal(part.images[:, 0, 0, 0].long(), 20 * part.labels)
    assert torch.bincount(splits.train.labels).tolist() == [3] * 10


def test_cifar10_from_a_jpeg_tarball_warns_that_it_is_lossy(tmp_path, monkeypatch, caplog):
    _no_download(monkeypatch)
    tree = _cifar_tree(tmp_path / "cifar", fmt="jpg")
    archive = _make_archive(tree, tmp_path / "cifar10-jpeg.tar.gz", wrapper=None)
    with caplog.at_level("WARNING", logger="ciiv.data.torchvision_sets"):
        splits = load_splits("cifar10", archive, val_fraction=0.0)
    assert len(splits.train) == 30 and splits.info.name == "cifar10"
    assert "lossy" in caplog.text and "not comparable" in caplog.text
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_splits("cifar10", tmp_path / "absent.tar.gz")


def test_cifar100_tree_with_cifar10_names_is_a_clear_error(tmp_path, monkeypatch):
    _no_download(monkeypatch)
    tree = _cifar_tree(tmp_path / "cifar")
    with pytest.raises(ValueError, match="not cifar100's classes .100 missing, 10 unknown"):
        load_splits("cifar100", tree)
    args = ["train", "--dataset", "cifar100", "--data-dir", str(tree), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": [*CIFAR10_NAMES[:9], "lorry"]}, r"1 missing, 1 unknown: lorry"),
        ({"size": 16}, "16 x 16 px, not 32 x 32"),
    ],
)
def test_cifar10_tree_with_wrong_classes_or_size(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_splits("cifar10", _cifar_tree(tmp_path / "cifar", **kwargs))


def test_cifar10_without_files_or_tree_mentions_the_image_folder_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="image-folder copy"):
        load_splits("cifar10", tmp_path / "empty", download=False)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPEG.is_file(), reason="no CIFAR-10 JPEG archive under shared/data")
def test_real_cifar10_jpeg_archive_as_cifar10():
    splits = load_splits("cifar10", CIFAR_JPEG, download=False)
    assert splits.info.mean == (0.4914, 0.4822, 0.4465)  # CIFAR-10's constants, not the tree's
    assert (len(splits.train), len(splits.val), len(splits.test["test"])) == (45000, 5000, 10000)
    assert torch.bincount(splits.test["test"].labels).tolist() == [1000] * 10
