"""The resumable batch loop shared by evaluation and certification: resume, shards, settings."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from ciiv.distributed import DistContext
from ciiv.evaluate.records import Batches, load_done, read_jsonl

N, SIZE = 11, 3  # four batches, the last one short
CONFIG = {"schema": "test/1", "settings": {"seed": 0, "suite": {"name": "s"}}}


def _compute(calls, fail_at=None):
    """rows and record of batch b; the rows depend on (b, position) only, as a seeded batch's do."""

    def compute(b, lo, hi):
        if b == fail_at:
            raise KeyboardInterrupt
        calls.append(b)
        rows = [{"position": i, "batch": b, "index": 100 + i, "value": b * 1000 + i} for i in
                range(lo, hi)]  # fmt: skip
        return rows, {"batch": b, "size": hi - lo, "forward_passes": 2 * (hi - lo)}

    return compute


def _summarise(rows, recs):
    return {
        "values": [r["value"] for r in rows],
        "batches": [r["batch"] for r in recs],
        "forward_passes": sum(r["forward_passes"] for r in recs),
    }


def _run(out, ctx=None, calls=None, fail_at=None, config=CONFIG, **options):
    batches = Batches(out, config, "a test", N, SIZE, ctx or DistContext(), **options)
    batches.run(_compute([] if calls is None else calls, fail_at))
    return batches.finish(_summarise)


def test_in_memory_runs_every_batch_in_order():
    calls = []
    summary, rows = _run(None, calls=calls)
    assert calls == [0, 1, 2, 3]
    assert [r["position"] for r in rows] == list(range(N))
    assert summary == {
        "values": [(i // SIZE) * 1000 + i for i in range(N)],
        "batches": [0, 1, 2, 3],
        "forward_passes": 2 * N,
    }


def test_an_interrupted_loop_resumes_skipping_finished_batches(tmp_path):
    whole_summary, whole_rows = _run(tmp_path / "whole")
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _run(out, fail_at=2)
    assert not (out / "summary.json").exists()
    # A crash in the middle of batch 2: two of its rows written, no record.
    with open(out / "examples.jsonl", "a") as f:
        f.write(json.dumps({"position": 6, "batch": 2, "index": 106, "value": -1}) + "\n")
        f.write('{"position": 7, "batch": 2, "ind')
    calls = []
    batches = Batches(out, CONFIG, "a test", N, SIZE, DistContext())
    assert (batches.done, batches.total) == (2, 4)
    batches.run(_compute(calls))
    summary, rows = batches.finish(_summarise)
    assert calls == [2, 3]  # batches 0 and 1 were not recomputed
    assert (summary, rows) == (whole_summary, whole_rows)
    assert read_jsonl(out / "examples.jsonl") == whole_rows  # the stale rows were dropped
    assert json.loads((out / "summary.json").read_text()) == whole_summary
    # Everything done: a third session computes nothing and writes the same summary.
    calls = []
    assert _run(out, calls=calls) == (whole_summary, whole_rows) and calls == []


@dataclass(frozen=True)
class FakeRank(DistContext):
    """A rank of a two-process group run alone: the all-gather reads every finished batch in
    ``out`` (what the other rank wrote before), the barrier and the broadcast do nothing."""

    out: Path | None = None

    def barrier(self):
        pass

    def all_gather(self, obj):
        rows, recs = load_done(self.out)
        return [([r for b in sorted(rows) for r in rows[b]], list(recs.values()))]

    def broadcast(self, obj):
        return obj


def test_ranks_write_shards_that_rank_0_merges(tmp_path):
    whole_summary, whole_rows = _run(tmp_path / "whole")
    out = tmp_path / "two"
    calls = []
    summary, rows = _run(out, FakeRank(1, 2, out=out), calls)
    assert calls == [1, 3] and summary is None  # rank 1: its batches, no summary
    assert {r["batch"] for r in read_jsonl(out / "shards" / "rank1" / "examples.jsonl")} == {1, 3}
    assert not (out / "examples.jsonl").exists()
    calls = []
    summary, rows = _run(out, FakeRank(0, 2, out=out), calls)
    assert calls == [0, 2]
    assert (summary, rows) == (whole_summary, whole_rows)
    assert not (out / "shards").exists()
    assert read_jsonl(out / "examples.jsonl") == whole_rows
    assert [r["batch"] for r in read_jsonl(out / "batches.jsonl")] == [0, 1, 2, 3]


def test_a_single_process_finishes_what_a_two_rank_run_left(tmp_path):
    whole_summary, whole_rows = _run(tmp_path / "whole")
    out = tmp_path / "died"
    _run(out, FakeRank(1, 2, out=out))  # rank 1 finished; rank 0 died before writing anything
    calls = []
    assert _run(out, calls=calls) == (whole_summary, whole_rows)
    assert calls == [0, 2] and not (out / "shards").exists()
    assert read_jsonl(out / "examples.jsonl") == whole_rows


def test_other_settings_are_refused_naming_the_key_and_overwrite_starts_afresh(tmp_path):
    out = tmp_path / "out"
    _run(out)
    (out / "plot.png").write_text("old")
    other = {**CONFIG, "settings": {**CONFIG["settings"], "seed": 1}}
    with pytest.raises(ValueError, match=r"holds a test with different settings \(settings.seed\)"):
        _run(out, config=other)
    calls = []
    _run(out, calls=calls, config=other, overwrite=True, extra_files=("plot.png",))
    assert calls == [0, 1, 2, 3] and not (out / "plot.png").exists()
    assert json.loads((out / "config.json").read_text()) == other
