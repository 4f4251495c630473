"""The one atomic write: the target holds the old content or the new one, never a part, and no
temporary is left behind."""

import json
import os
import stat

import pytest

from ciiv._io import TMP_SUFFIX, atomic_write, write_json_atomic, write_jsonl_atomic
from ciiv.train.checkpoint import remove_temporaries, save_checkpoint


def test_json_and_jsonl_round_trip_into_new_folders(tmp_path):
    data = {"accuracy": 0.5, "names": ["pgd", "fgsm"]}
    path = write_json_atomic(tmp_path / "a" / "b" / "summary.json", data)
    assert json.loads(path.read_text()) == data and path.read_text().endswith("}\n")
    rows = [{"i": i} for i in range(3)]
    lines = write_jsonl_atomic(tmp_path / "rows.jsonl", iter(rows)).read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "rows.jsonl"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"old": True})

    def broken(f):
        f.write('{"new": ')
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_files_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "x.bin", lambda f: f.write(b"\x00\x01"), binary=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_bytes() == b"\x00\x01"


def test_checkpoint_temporaries_match_what_remove_temporaries_deletes(tmp_path):
    """A killed save leaves ``.<name>.<unique>.tmp``; the cleanup finds exactly those."""
    save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    stale = tmp_path / f".last.pt.0123456789ab{TMP_SUFFIX}"
    stale.write_bytes(b"half")
    assert remove_temporaries(tmp_path) == [stale]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
