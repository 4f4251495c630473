"""MNIST through torchvision: corrupt idx files are named, an unreachable server fails fast."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch
from torchvision import datasets

import ciiv.data.torchvision_sets
from ciiv.data import DatasetNotFoundError, load_splits


def _idx(magic: int, dims: list[int]) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + bytes(int(torch.tensor(dims).prod()))


def _mnist(root, n: int = 20):
    """Tiny but well-formed MNIST idx files under root/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(_idx(0x803, [n, 28, 28]))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx(0x801, [n]))
    return raw


def test_well_formed_idx_files_load(tmp_path):
    _mnist(tmp_path)
    splits = load_splits("mnist", tmp_path, download=False, val_fraction=0.0)
    assert splits.train.images.shape == (20, 1, 28, 28)


def test_bad_magic_number_names_the_file(tmp_path):
    images = _mnist(tmp_path) / "train-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x08\x04" + images.read_bytes()[4:])
    with pytest.raises(DatasetNotFoundError, match="not an MNIST idx file") as error:
        load_splits("mnist", tmp_path, download=False)
    assert str(images) in str(error.value) and "0x00000803" in str(error.value)


def test_truncated_file_names_the_file(tmp_path):
    labels = _mnist(tmp_path) / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DatasetNotFoundError, match="truncated or corrupt") as error:
        load_splits("mnist", tmp_path, download=False)
    assert str(labels) in str(error.value)


def test_download_from_a_silent_server_fails_fast(tmp_path, monkeypatch):
    # A server that accepts connections and never answers: without a timeout the download hangs
    # (until the listener closes after 10 s, which fails this test on time instead).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    closer = threading.Timer(10, server.close)
    closer.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/"
    monkeypatch.setattr(datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(ciiv.data.torchvision_sets, "DOWNLOAD_TIMEOUT_S", 0.5)
    start = time.perf_counter()
    try:
        with pytest.raises(DatasetNotFoundError, match="the download failed") as error:
            load_splits("mnist", tmp_path / "data", download=True)
    finally:
        closer.cancel()
        server.close()
    assert time.perf_counter() - start < 5
    assert f"Put the torchvision files at {tmp_path / 'data' / 'MNIST' / 'raw'}" in str(error.value)
    assert "\n" not in str(error.value)
