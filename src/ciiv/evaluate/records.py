"""Result files of an evaluation directory (docs/evaluation.md, "Files"), written so that an
interrupted run can resume: a batch counts as done only when its record in ``batches.jsonl`` is
there, written *after* its rows in ``examples.jsonl``. :class:`Batches` reads and writes them::

    batches = Batches(out, config, "an evaluation", n, batch_size, ctx, overwrite=overwrite)
    batches.run(compute)  # compute(batch, lo, hi) -> (rows, record) of examples lo..hi-1
    summary, rows = batches.finish(summarise)  # summarise(rows, records) -> summary, on rank 0

Rank r takes the batches b with b mod world = r; batch b always holds the same examples and the
caller derives its randomness from (seed, b), so finished batches are reused by any later run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ciiv._io import write_json_atomic, write_jsonl_atomic
from ciiv.distributed import DistContext

__all__ = [
    "Batches",
    "examples_digest",
    "load_done",
    "read_json",
    "read_jsonl",
    "write_json_atomic",
]

EXAMPLES, BATCHES, CONFIG = "examples.jsonl", "batches.jsonl", "config.json"
SUMMARY, SHARDS = "summary.json", "shards"


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys where two configs differ, a ``settings`` block's by field (``settings.seed``)."""
    keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    before, after = old.get("settings"), new.get("settings")
    if "settings" in keys and isinstance(before, dict) and isinstance(after, dict):
        fields = {*before, *after}
        keys.remove("settings")
        keys += sorted(f"settings.{k}" for k in fields if before.get(k) != after.get(k))
    return keys


def model_digest(model: nn.Module) -> str:
    """A short hash of the model's weights (every parameter and buffer, in registration order,
    without their names, so a wrapper around the same model has the same digest): resuming an
    evaluation with other weights (another checkpoint, more training) would mix two models."""
    h = hashlib.sha256()
    for tensor in model.state_dict().values():
        h.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def examples_digest(x: Tensor, y: Tensor, indices: list[int]) -> str:
    """A short hash of the examples (pixels, labels, source indices): resuming needs the same."""
    h = hashlib.sha256()
    h.update(np.asarray(indices, dtype=np.int64).tobytes())
    h.update(y.detach().cpu().numpy().astype(np.int64).tobytes())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file. An unterminated last line (a write cut short) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    # Everything after the last newline is an unterminated line, never trusted.
    complete = path.read_text(encoding="utf-8").split("\n")[:-1]
    rows = []
    for number, line in enumerate(complete, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {number} is not valid JSON") from None
    return rows


def _complete(directory: Path) -> tuple[dict[int, list[dict]], dict[int, dict]]:
    """Finished batches of one directory: rows and record of every batch whose record is there
    and whose rows are all present."""
    records = {r["batch"]: r for r in read_jsonl(directory / BATCHES)}
    by_batch: dict[int, list[dict]] = {}
    for row in read_jsonl(directory / EXAMPLES):
        by_batch.setdefault(row["batch"], []).append(row)
    done = {b: r for b, r in records.items() if len(by_batch.get(b, ())) == r["size"]}
    rows = {b: sorted(by_batch[b], key=lambda row: row["position"]) for b in done}
    return rows, done


def load_done(out_dir: Path) -> tuple[dict[int, list[dict]], dict[int, dict]]:
    """Finished batches found in ``out_dir`` and its shards: (rows by batch, record by batch)."""
    out_dir = Path(out_dir)
    shards = sorted(p for p in (out_dir / SHARDS).glob("*") if p.is_dir())
    rows: dict[int, list[dict]] = {}
    records: dict[int, dict] = {}
    for directory in reversed([out_dir, *shards]):  # the first directory holding a batch wins
        dir_rows, dir_records = _complete(directory)
        rows.update(dir_rows)
        records.update(dir_records)
    return rows, records


Compute = Callable[[int, int, int], tuple[list[dict], dict]]
Summarise = Callable[[list[dict], list[dict]], dict[str, Any]]


class Batches:
    """This process's batches of ``n`` examples in batches of ``batch_size``, resumed from
    ``out`` (None: kept in memory only).

    Attributes:
        mine: the batch numbers this rank computes, in order.
        rows, records: rows and record of every finished batch of this rank, by batch number
            (those found in ``out`` and those computed since).
        computed: batches computed by this session.
    """

    def __init__(
        self,
        out: Path | None,
        config: dict[str, Any],
        what: str,
        n: int,
        batch_size: int,
        ctx: DistContext,
        overwrite: bool = False,
        extra_files: tuple[str, ...] = (),
    ) -> None:
        """Open ``out``: remove earlier results when ``overwrite`` (also ``extra_files``), then
        write ``config.json`` or check that the one there holds ``config`` (a ValueError naming
        ``what``, e.g. "an evaluation", and the differing keys otherwise)."""
        self.out, self.n, self.batch_size, self.ctx = out, n, batch_size, ctx
        self.mine = list(range(ctx.rank, -(-n // batch_size), ctx.world_size))
        self.rows: dict[int, list[dict]] = {}
        self.records: dict[int, dict] = {}
        self.computed = 0
        self._shard: Path | None = None
        if out is None:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"cannot create the output directory {out} ({exc.strerror or exc}); choose one in "
                "a folder you can write to"
            ) from None
        if overwrite and ctx.is_main:  # only the files this module writes, and extra_files
            for name in (EXAMPLES, BATCHES, CONFIG, SUMMARY, *extra_files):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / SHARDS, ignore_errors=True)
        ctx.barrier()
        config = json.loads(json.dumps(config))  # as it reads back from config.json
        if (out / CONFIG).exists():
            previous = read_json(out / CONFIG)
            if previous != config:
                keys = ", ".join(_differences(previous, config))
                raise ValueError(
                    f"{out} holds {what} with different settings ({keys}); use another output "
                    "directory, or overwrite=True (--overwrite) to start afresh"
                )
        elif ctx.is_main:
            write_json_atomic(out / CONFIG, config)
        done_rows, done_records = load_done(out)
        self.records = {b: done_records[b] for b in self.mine if b in done_records}
        self.rows = {b: done_rows[b] for b in self.records}
        # This rank's files, rewritten to hold exactly their finished batches (rows of a batch
        # cut short are dropped), so that appended rows never mix with stale ones.
        self._shard = out if ctx.world_size == 1 else out / SHARDS / f"rank{ctx.rank}"
        self._shard.mkdir(parents=True, exist_ok=True)
        rows, records = _complete(self._shard)
        write_jsonl_atomic(self._shard / EXAMPLES, (r for b in sorted(rows) for r in rows[b]))
        write_jsonl_atomic(self._shard / BATCHES, (records[b] for b in sorted(records)))

    def _append(self, name: str, items: Iterable[dict]) -> None:
        with open(self._shard / name, "a", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @property
    def total(self) -> int:
        """Batches of this rank."""
        return len(self.mine)

    @property
    def done(self) -> int:
        """Finished batches of this rank."""
        return len(self.records)

    def seen(self) -> Iterator[dict]:
        """Rows of this rank's finished batches."""
        return (row for rows in self.rows.values() for row in rows)

    def run(self, compute: Compute, on_batch: Callable[[int], None] | None = None) -> None:
        """Compute every batch of this rank not done yet (see the module doc); each is on disk
        before ``on_batch(b)`` is called."""
        for b in self.mine:
            if b in self.records:
                continue
            lo, hi = b * self.batch_size, min(self.n, (b + 1) * self.batch_size)
            rows, record = compute(b, lo, hi)
            if self._shard is not None:  # the rows, then the record that marks the batch done
                self._append(EXAMPLES, rows)
                self._append(BATCHES, [record])
            self.rows[b], self.records[b] = rows, record
            self.computed += 1
            if on_batch:
                on_batch(b)

    def finish(self, summarise: Summarise) -> tuple[dict[str, Any], list[dict]]:
        """Gather every rank's rows and records; on rank 0 merge the shard files, build the
        summary with ``summarise(rows, records)`` (rows in example order, records in batch order)
        and write it to ``summary.json``. Returns (rank 0's summary, every row) on every rank."""
        parts = self.ctx.all_gather((list(self.seen()), list(self.records.values())))
        rows = sorted((row for part in parts for row in part[0]), key=lambda r: r["position"])
        recs = sorted((rec for part in parts for rec in part[1]), key=lambda r: r["batch"])
        summary = None
        if self.ctx.is_main:
            out = self.out
            if out is not None and (self.ctx.enabled or (out / SHARDS).exists()):
                # Rows of other ranks (or of an earlier multi-process run) go into the merged files.
                write_jsonl_atomic(out / EXAMPLES, rows)
                write_jsonl_atomic(out / BATCHES, recs)
                shutil.rmtree(out / SHARDS, ignore_errors=True)
            summary = summarise(rows, recs)
            if out is not None:
                write_json_atomic(out / SUMMARY, summary)
        return self.ctx.broadcast(summary), rows
