"""The training loop and its run directory: files, resumption, loading back, error paths."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ciiv.models import CiiVClassifier, SmoothedClassifier, predict
from ciiv.train import (
    CheckpointError,
    ConfigError,
    ProgressEvent,
    RunDirExistsError,
    fit,
    load_checkpoint,
    load_config,
    load_data,
    load_run,
    resume,
)
from ciiv.train.methods import option_names
from ciiv.train.methods.standard import Vanilla

TIMING_KEYS = ("images_per_s", "epoch_time_s")


def tiny(method: str = "ciiv", **overrides):
    """A config that trains in well under a second per epoch on one CPU core."""
    values = {
        "data.options": {"n_train": 112, "n_test": 8, "image_size": 16},
        "data.val_fraction": 0.25,
        "model.backbone": "small_cnn",
        "model.backbone_kwargs": {"width": 8},
        "model.num_views": 3,
        "model.samples_per_view": 2,
        "model.smoothing_draws": 2,
        "model.smoothing_votes": 3,
        "method.name": method,
        **({"method.pgd.steps": 2} if "pgd" in option_names(method) else {}),
        "optim.lr": 0.05,
        "batch_size": 16,
        "epochs": 2,
        "device": "cpu",
        **overrides,
    }
    return load_config(None, values)


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fit_writes_config_metrics_and_checkpoints(tmp_path):
    config = tiny()
    events: list[ProgressEvent] = []
    result = fit(config, tmp_path / "run", progress=events.append, progress_every=2)
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == config
    rows = records(run)
    assert [r["epoch"] for r in rows] == [0, 1] and rows == result.history
    assert set(rows[0]) == {
        "epoch", "lr", "w_reg", "train_loss", "train_acc", "train_ce", "train_reg", "val_acc",
        "images_per_s", "epoch_time_s",
    }  # fmt: skip
    assert rows[0]["lr"] == 0.05 and rows[0]["w_reg"] == pytest.approx(0.1)
    assert all(0 <= r["val_acc"] <= 1 and r["images_per_s"] > 0 for r in rows)
    # best.pt is the epoch with the highest validation accuracy (the first one on ties)
    best = max(range(2), key=lambda e: (rows[e]["val_acc"], -e))
    assert result.best_epoch == best and result.best_val_accuracy == rows[best]["val_acc"]
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == best + 1
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["method"] == "ciiv" and last["versions"]["torch"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    # progress per epoch: epoch_start, a step event after every step (the running loss and
    # accuracy every 2 steps and at the last: they cost a sync), validation batches, epoch_end
    steps = 84 // 16
    first = [e for e in events if e.epoch == 0]
    validate = [e for e in first if e.kind == "validate"]
    assert [e.kind for e in first] == (
        ["epoch_start"] + ["step"] * steps + ["validate"] * len(validate) + ["epoch_end"]
    )
    stepped = [e for e in first if e.kind == "step"]
    assert [e.step for e in stepped] == list(range(1, steps + 1))
    assert all(e.steps == steps and e.metrics["images_per_s"] > 0 for e in stepped)
    assert [e.step for e in stepped if "loss" in e.metrics] == [2, 4, steps]
    batches = validate[0].steps
    assert batches >= 1 and [e.step for e in validate] == list(range(batches + 1))
    assert events[-1].metrics == rows[-1]
    assert not result.model.training


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    # Milestones inside the run, so the lr and w_reg schedules cross the interruption.
    config = tiny(
        "ciiv_mixup",
        epochs=3,
        deterministic=True,
        **{"optim.milestones": [2], "method.w_reg_milestones": [1]},
    )
    whole = fit(config, tmp_path / "whole")

    def crash_after_second_epoch(event: ProgressEvent) -> None:
        if event.kind == "epoch_end" and event.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "resumed", progress=crash_after_second_epoch)
    assert len(records(tmp_path / "resumed")) == 2
    resumed = resume(tmp_path / "resumed")

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]

    assert strip(records(tmp_path / "resumed")) == strip(records(tmp_path / "whole"))
    assert [r["lr"] for r in whole.history] == pytest.approx([0.05, 0.05, 0.005])
    assert [r["w_reg"] for r in whole.history] == pytest.approx([0.1, 1.0, 1.0])
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_extends_a_finished_run_and_refuses_other_changes(tmp_path):
    run = tmp_path / "run"
    fit(tiny("vanilla", epochs=1), run)
    with pytest.raises(ConfigError, match=r"cannot resume with a different config: optim.lr"):
        resume(run, ["optim.lr=0.5"])
    result = resume(run, {"epochs": 2})
    assert [r["epoch"] for r in records(run)] == [0, 1] == [r["epoch"] for r in result.history]
    assert load_config(run / "config.yaml").epochs == 2


@pytest.mark.parametrize("method, kind", [("ciiv", CiiVClassifier), ("rs", SmoothedClassifier)])
def test_load_run_rebuilds_the_model_with_its_inference_rule(tmp_path, method, kind):
    config = tiny(method, epochs=1)
    result = fit(config, tmp_path / "run")
    run = load_run(tmp_path / "run", "best", device="cpu")
    assert type(run.model) is kind and not run.model.training and run.model.stochastic
    assert (run.method, run.dataset, run.config, run.epoch) == (method, "shapes", config, 1)
    assert run.dataset_info.image_size == 16
    trained = result.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in run.model.state_dict().items())
    x = load_data(config.data).val.images[:5].float() / 255
    torch.manual_seed(0)
    labels = predict(run.model, x)
    torch.manual_seed(0)
    if method == "rs":
        assert torch.equal(labels, run.model.predict(x))  # the majority vote
    else:
        assert torch.equal(labels, run.model(x).argmax(1))  # z-weighted mean over the views


def test_an_existing_run_directory_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()  # an empty directory is fine
    fit(tiny("vanilla", epochs=1), run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(RunDirExistsError, match="pick another --out, or continue that run with"):
        fit(tiny("vanilla", epochs=1), run)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_bad_checkpoints_give_a_clear_error(tmp_path):
    run = tmp_path / "run"
    fit(tiny("vanilla", epochs=1), run)
    last = run / "checkpoints" / "last.pt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])  # truncated by a crash mid-copy
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a checkpoint"):
        resume(run)
    last.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a checkpoint"):
        load_run(run, "last")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, last)  # someone else's torch file
    with pytest.raises(CheckpointError, match="not a `ciiv train` checkpoint"):
        load_run(run, "last")
    torch.save({"format": "ciiv-train-checkpoint", "bad": ConfigError("x")}, last)  # unsafe
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a checkpoint") as error:
        load_run(run, "last")
    # Never torch's advice to load it with weights_only=False: say how to get a good file.
    assert "weights_only" not in str(error.value) and "never loaded unsafely" in str(error.value)
    assert "use the run's other checkpoint" in str(error.value)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_run(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="cannot resume"):
        fit(tiny("vanilla"), tmp_path / "elsewhere", resume=True)
    with pytest.raises(ValueError, match="unknown checkpoint 'final'; valid: best, last"):
        load_run(run, "final")


def test_settings_that_cannot_run_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="amp: 'fp16' needs a CUDA device"):
        fit(tiny(amp="fp16"), tmp_path / "a")
    with pytest.raises(ConfigError, match="batch_size: 512 is larger than the training split"):
        fit(tiny(batch_size=512), tmp_path / "b")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fit(tiny(device="cuda"), tmp_path / "c")


def test_bf16_autocast_trains_on_the_cpu(tmp_path, monkeypatch):
    seen = []  # (autocast on, dtype of the logits) of every training step
    step = Vanilla.__call__

    def recording(self, model, x, y, ctx):
        out = step(self, model, x, y, ctx)
        seen.append((torch.is_autocast_enabled("cpu"), out.logits.dtype))
        return out

    monkeypatch.setattr(Vanilla, "__call__", recording)
    result = fit(tiny("vanilla", epochs=1, amp="bf16"), tmp_path / "run")
    assert result.history[0]["train_loss"] > 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["amp"] == "bf16"
    assert seen and set(seen) == {(True, torch.bfloat16)}
    assert next(result.model.parameters()).dtype == torch.float32  # the weights stay float32
    seen.clear()
    fit(tiny("vanilla", epochs=1, amp="none"), tmp_path / "none")
    assert seen and set(seen) == {(False, torch.float32)}


@pytest.mark.slow
def test_compiled_backbone_trains_and_its_checkpoint_loads_uncompiled(tmp_path):
    # About a minute on a CPU: inductor compiles the backbone's C++ kernels.
    result = fit(tiny(epochs=1, compile=True), tmp_path / "run")
    run = load_run(tmp_path / "run", "last", device="cpu")
    trained = result.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in run.model.state_dict().items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_cuda_training_with_amp_and_channels_last(tmp_path, amp):
    result = fit(tiny(device="cuda", amp=amp, epochs=1), tmp_path / "run")
    assert next(result.model.parameters()).is_cuda
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    run = load_run(tmp_path / "run", "last", device="cuda")
    x = torch.rand(4, 3, 16, 16, device="cuda")
    assert predict(run.model, x).device.type == "cuda"
