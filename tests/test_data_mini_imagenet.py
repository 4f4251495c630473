"""``mini-imagenet``: the committed class list, deterministic selection and splits, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import ciiv.data.mini_imagenet
from ciiv.data import DatasetNotFoundError, get_dataset_info, load_splits
from ciiv.data.mini_imagenet import mini_imagenet_classes

WNIDS = ("n00000003", "n00000001", "n00000002")  # unsorted on purpose
OPTIONS = {"classes": WNIDS, "images_per_class": 10, "split": (6, 2, 2), "image_size": 8}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIIV_CACHE", str(tmp_path / "cache"))


def _make_imagenet(root: Path, per_class: int = 12, size: int = 24) -> Path:
    """ImageNet-like train folder; image i of class c is one flat colour (10 c, 10 i, 0)."""
    for c, wnid in enumerate(sorted(WNIDS)):
        folder = root / wnid
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (10 * c, 10 * i, 0)).save(folder / f"{wnid}_{i:05d}.png")
    return root


def test_committed_class_list():
    text = (Path(ciiv.data.mini_imagenet.__file__).parent / "mini_imagenet_classes.txt").read_text()
    lines = text.split()
    assert len(lines) == len(set(lines)) == 100
    assert all(re.fullmatch(r"n\d{8}", w) for w in lines)
    assert lines == sorted(lines) and tuple(lines) == mini_imagenet_classes()
    # Spot checks from the Ravi & Larochelle train / val / test class lists.
    assert {"n01532829", "n13133613", "n01855672", "n09256479", "n01930112", "n07613480"} <= set(
        lines
    )
    assert get_dataset_info("mini-imagenet").class_names == tuple(lines)


def test_selection_and_splits(tmp_path):
    splits = load_splits("mini-imagenet", _make_imagenet(tmp_path / "train"), **OPTIONS)
    assert splits.info.class_names == tuple(sorted(WNIDS))
    assert splits.info.image_size == 8 and splits.train.images.shape[1:] == (3, 8, 8)
    expected = {"train": range(0, 6), "val": range(6, 8), "test": range(8, 10)}
    parts = {"train": splits.train, "val": splits.val, "test": splits.test["test"]}
    for name, part in parts.items():
        assert torch.bincount(part.labels).tolist() == [len(expected[name])] * 3
        assert torch.equal(part.images[:, 0, 0, 0].long(), 10 * part.labels)  # class colour
        index = part.images[:, 1, 0, 0].long() // 10  # image rank in sorted file order
        assert sorted(set(index.tolist())) == list(expected[name])  # images 10, 11 unused


def test_parent_folder_and_cache(tmp_path, monkeypatch):
    _make_imagenet(tmp_path / "imagenet" / "train")
    first = load_splits("mini-imagenet", tmp_path / "imagenet", **OPTIONS)

    def fail(*args, **kwargs):
        raise AssertionError("the decoded cache should have been used")

    monkeypatch.setattr(ciiv.data.mini_imagenet, "decode_images", fail)
    second = load_splits("mini-imagenet", tmp_path / "imagenet", **OPTIONS)
    assert torch.equal(first.val.images, second.val.images)


def test_missing_and_short_classes_are_named(tmp_path):
    root = _make_imagenet(tmp_path / "train", per_class=12)
    for path in list((root / "n00000002").iterdir())[:5]:
        path.unlink()
    options = {**OPTIONS, "classes": (*WNIDS, "n00000009")}
    with pytest.raises(DatasetNotFoundError) as caught:
        load_splits("mini-imagenet", root, **options)
    message = str(caught.value)
    assert "n00000009: folder missing" in message
    assert "n00000002: 7 images, need 10" in message
    assert "n00000001" not in message


def test_default_needs_the_full_class_list(tmp_path):
    root = _make_imagenet(tmp_path / "train")
    with pytest.raises(DatasetNotFoundError, match="100 of 100 classes unusable"):
        load_splits("mini-imagenet", root)
    with pytest.raises(DatasetNotFoundError, match="needs --data-dir"):
        load_splits("mini-imagenet")


def test_split_must_add_up():
    with pytest.raises(ValueError, match="sum to images_per_class"):
        get_dataset_info("mini-imagenet", split=(420, 60, 100))
