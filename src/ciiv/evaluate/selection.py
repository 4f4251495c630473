"""Which test examples an evaluation uses (``ciiv eval``, ``ciiv audit`` and ``ciiv experiment``
pick the same ones for the same seed, so their numbers describe the same images), and where its
files go."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "describe_run",
    "describe_selection",
    "eval_dir_name",
    "evaluation_examples",
    "select_examples",
]


def select_examples(num: int, n_examples: int, seed: int) -> Tensor:
    """Indices of the evaluated examples: the first ``n_examples`` of a permutation of range(num)
    seeded with ``seed`` (all of them for 0 or more than num), as an int64 tensor."""
    if n_examples < 0:
        raise ValueError(f"n_examples must be >= 0 (0 = all examples), got {n_examples}")
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return perm if n_examples <= 0 else perm[:n_examples]


def evaluation_examples(
    splits, dataset: str, split: str | None, n_examples: int, seed: int
) -> tuple[str, Tensor, Tensor, Tensor]:
    """``(split name, indices, images in [0,1], labels)`` of the evaluated examples of a test split
    (None: the dataset's first), chosen by :func:`select_examples`."""
    split = split or next(iter(splits.test))
    if split not in splits.test:
        raise ValueError(
            f"unknown test split {split!r} of {dataset}; valid: {', '.join(splits.test)}"
        )
    data = splits.test[split]
    index = select_examples(len(data), n_examples, seed)
    return split, index, data.images[index].float() / 255, data.labels[index]


def eval_dir_name(suite: str, protocol: str, split: str | None, eps: str | None) -> str:
    """``<suite>-<protocol>``, plus ``-<split>`` for a non-default split and ``-eps<E>`` for an
    eps override (so different settings never share a directory)."""
    name = f"{suite}-{protocol}"
    if split:
        name += f"-{split}"
    if eps:
        name += "-eps" + eps.replace("/", "_")
    return name


def describe_run(loaded, split: str, index: Tensor, split_size: int, seed: int) -> dict:
    """What a summary records of the evaluated run (a :class:`ciiv.train.LoadedRun`) and of the
    examples chosen by :func:`evaluation_examples` (``summary["run"]``)."""
    return {
        "run_dir": str(loaded.run_dir),
        "method": loaded.method,
        "dataset": loaded.dataset,
        "backbone": loaded.config.model.backbone,
        "checkpoint": loaded.checkpoint,
        "epoch": loaded.epoch,
        **describe_selection(split, index, split_size, seed),
    }


def describe_selection(split: str, index: Tensor, split_size: int, seed: int) -> dict:
    """The test split and how :func:`evaluation_examples` chose ``index`` from it, for a
    summary's ``run`` record."""
    return {
        "test_split": split,
        "selection": f"first {len(index)} of randperm({split_size}, seed={seed})",
    }
