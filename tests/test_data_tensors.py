"""In-memory splits: validation carving and the (sharded) batch iterator."""

from __future__ import annotations

import pytest
import torch

from ciiv.data import (
    ImageTensors,
    batches_per_epoch,
    iterate_batches,
    split_validation,
    stratified_subset,
)
from ciiv.data.tensors import channel_stats


def _data(n: int = 103, classes: int = 4) -> ImageTensors:
    ids = torch.arange(n)
    # Encode each example's index in its pixels so identity can be checked after indexing.
    images = torch.stack([ids % 256, ids // 256], 1)[:, :, None, None].to(torch.uint8)
    return ImageTensors(images.expand(n, 2, 3, 3).contiguous(), ids % classes)


def _ids(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()


def test_image_tensors_validates():
    with pytest.raises(ValueError, match="uint8"):
        ImageTensors(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageTensors(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_split_validation_disjoint_stratified_deterministic():
    data = _data(1000, classes=4)
    train, val = split_validation(data, 0.1, seed=0)
    train_ids, val_ids = _ids(train.images), _ids(val.images)
    assert len(set(train_ids.tolist()) & set(val_ids.tolist())) == 0
    assert sorted(train_ids.tolist() + val_ids.tolist()) == list(range(1000))
    assert torch.bincount(val.labels).tolist() == [25, 25, 25, 25]
    assert torch.equal(val.labels, data.labels[val_ids])  # labels travel with their images
    assert torch.equal(val_ids, _ids(split_validation(data, 0.1, seed=0)[1].images))
    assert not torch.equal(val_ids, _ids(split_validation(data, 0.1, seed=1)[1].images))
    assert len(split_validation(data, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(data, 1.0, seed=0)


def test_stratified_subset_keeps_class_shares_and_is_seeded():
    data = _data(1000, classes=4)
    subset = stratified_subset(data, 200, seed=0)
    ids = _ids(subset.images)
    assert torch.bincount(subset.labels).tolist() == [50, 50, 50, 50]
    assert torch.equal(subset.labels, data.labels[ids]) and bool((ids.diff() > 0).all())
    assert torch.equal(ids, _ids(stratified_subset(data, 200, seed=0).images))
    assert not torch.equal(ids, _ids(stratified_subset(data, 200, seed=1).images))
    assert stratified_subset(data, 5000, seed=0) is data


def test_iterate_batches_covers_an_epoch_once():
    data = _data(103)
    batches = list(iterate_batches(data.images, data.labels, 10))
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    seen = torch.cat([_ids(x) for x, _ in batches])
    assert seen.tolist() == list(range(103))  # no shuffle: in order
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels, data.labels)
    dropped = list(iterate_batches(data.images, data.labels, 10, drop_last=True))
    assert len(dropped) == 10 == batches_per_epoch(103, 10, drop_last=True)
    assert len(batches) == batches_per_epoch(103, 10)


def test_shuffle_follows_the_generator():
    data = _data(50)

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat(
            [
                _ids(x)
                for x, _ in iterate_batches(data.images, data.labels, 8, shuffle=True, generator=g)
            ]
        )

    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))
    assert sorted(order(0).tolist()) == list(range(50))


@pytest.mark.parametrize(("n", "world_size"), [(103, 4), (100, 4), (5, 3)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_partition_the_epoch(n, world_size, drop_last):
    data = _data(n)
    per_rank = []
    for rank in range(world_size):
        g = torch.Generator().manual_seed(11)  # identical seed on every rank
        batches = list(
            iterate_batches(
                data.images,
                data.labels,
                4,
                shuffle=True,
                generator=g,
                drop_last=drop_last,
                rank=rank,
                world_size=world_size,
            )
        )
        assert len(batches) == batches_per_epoch(n, 4, drop_last=drop_last, world_size=world_size)
        per_rank.append(torch.cat([_ids(x) for x, _ in batches]) if batches else torch.empty(0))
    assert len({len(ids) for ids in per_rank}) == 1  # same step count on every rank
    if not drop_last:
        everything = torch.cat(per_rank)
        assert set(everything.tolist()) == set(range(n))  # union covers the data
        assert len(everything) - n < world_size  # padding only to a multiple of world_size


def test_bad_rank():
    data = _data(10)
    with pytest.raises(ValueError, match="rank"):
        next(iterate_batches(data.images, data.labels, 2, rank=2, world_size=2))


def test_channel_stats_match_float_computation():
    images = torch.randint(0, 256, (37, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), x.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(
        torch.tensor(std, dtype=torch.float64),
        x.permute(1, 0, 2, 3).flatten(1).std(1, correction=0),
        atol=1e-4,
    )
