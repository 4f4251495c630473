"""The GPU check: ciiv's main job verified on CUDA in one prepared command, in at most 8 minutes.

    python benchmarks/gpu_check.py --data PATH/cifar10-jpeg-q75.tar.gz [--out gpu_check.json]
    python benchmarks/gpu_check.py --small     # a CPU smoke run in seconds (the test suite runs it)

Items, in this order, each in its own time box (the boxes add up to under 8 minutes; an item that
overruns is stopped, recorded as ``timed_out`` with what it had measured, and the next one starts):

1. ``pytest``: ``pytest -m gpu`` (the GPU tests).
2. ``throughput``: PreActResNet-18, CIFAR shape, batch 128, 9 views x 3 samples; images/s and peak
   memory of vanilla training; CiiV training in fp32, bf16 + channels_last (the CUDA default), and
   + ``torch.compile`` of the whole step (compile time apart); CiiV training the naive way (9
   sequential backbone passes) for the ratio; inference; full-protocol PGD-20 at EOT 1 and EOT 8,
   and at EOT 8 on the opt-in bf16 attack path; then, time permitting, the compiled step with CUDA
   graphs ("reduce-overhead").
3. ``real_run``: CiiV on CIFAR-10-JPEG (``--data``: the tarball, read as an image folder) for 2
   epochs with the training defaults, then the ``quick`` suite under both protocols on 500 test
   images: clean and robust accuracy and the wall time of each phase.
4. ``bf16_attack``: on that model and those images, PGD-20 EOT 8 in fp32 and on the bf16 path with
   the same seeds and model draws: robust accuracy of each and the examples where they disagree
   (it needs a trained model: on random weights both accuracies are 0).

``--out`` (default gpu_check.json) is rewritten after every item and every throughput row, so a
killed run keeps what it measured; a table is printed at the end. Images/s count input images (a
CiiV image once, although its 9 views go through the backbone); see bench_common.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import ciiv  # noqa: F401
except ImportError:  # a bare checkout (the GPU machine): use the source tree
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    build_model,
    device_name,
    inference_throughput,
    pgd_eot_throughput,
    resolve_device,
    train_throughput,
)

SCHEMA = "ciiv.gpu_check/1"
ITEMS = ("pytest", "throughput", "real_run", "bf16_attack")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg-q75.tar.gz"
# The targets for one H100/H200-class GPU (docs/performance.md).
TARGETS = {
    "ciiv_train_images_per_s": 10_000,
    "pgd20_eot1_images_per_s": 600,
    "pgd20_eot8_images_per_s": 75,
}


@dataclass(frozen=True)
class Sizes:
    """Every size of the check; FULL on a GPU, SMALL for the CPU smoke run."""

    backbone: str
    batch: int
    views: int
    samples: int
    train_steps: int
    warmup: int
    attack_batch: int
    attack_steps: int
    eot: int
    epochs: int
    n_eval: int
    draws: int | None  # None: the evaluation's default R
    budgets: dict[str, float] = field(default_factory=dict)  # seconds per item
    real_run_overrides: dict = field(default_factory=dict)


FULL = Sizes(
    backbone="preact_resnet18", batch=128, views=9, samples=3, train_steps=20, warmup=3,
    attack_batch=128, attack_steps=20, eot=8, epochs=2, n_eval=500, draws=None,
    budgets={"pytest": 70, "throughput": 180, "real_run": 150, "bf16_attack": 60},
)  # fmt: skip
SMALL = Sizes(
    backbone="small_cnn", batch=4, views=3, samples=1, train_steps=1, warmup=1,
    attack_batch=2, attack_steps=2, eot=2, epochs=1, n_eval=8, draws=2,
    budgets={"pytest": 60, "throughput": 60, "real_run": 60, "bf16_attack": 30},
    real_run_overrides={
        "model.backbone": "small_cnn", "model.num_views": 3, "model.samples_per_view": 1,
        "batch_size": 8, "eval_batch_size": 16,
    },
)  # fmt: skip


class ItemTimeout(Exception):
    """An item ran past its time box."""


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise ItemTimeout in the block after ``seconds`` (SIGALRM; a no-op off the main thread or
    where there is no SIGALRM). A CUDA kernel or a compile in flight is interrupted when it
    returns to Python."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def fire(signum, frame):
        raise ItemTimeout(f"stopped after its time box of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Report:
    """gpu_check.json: rewritten atomically after every item and every row."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        self.data = {**header, "items": {}}
        self.write()

    def item(self, name: str) -> dict:
        return self.data["items"].setdefault(name, {"status": "running"})

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- item 1: the GPU tests --------------------------------------------------------------------


def item_pytest(entry: dict, sizes: Sizes, small: bool, seconds: float, report: Report) -> None:
    # --small only collects the GPU test module (every test skips without CUDA): seconds, not
    # the minute a full collection takes on two cores.
    target = [str(ROOT / "tests" / "test_gpu.py")] if small else [str(ROOT / "tests")]
    command = [
        sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
        "--continue-on-collection-errors", *target,
    ]  # fmt: skip
    entry["command"] = " ".join(command[1:])
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if small else None
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=max(seconds - 2, 1),
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        entry["status"] = "timed_out"
        entry["tail"] = (exc.stdout or "")[-3000:] if isinstance(exc.stdout, str) else ""
        return
    output = done.stdout + done.stderr
    counts = dict(
        (word, int(n)) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", output)
    )
    entry.update(returncode=done.returncode, counts=counts, tail=output[-3000:])
    # 5: no test collected (a CPU machine deselects nothing but skips everything: rc 0).
    entry["status"] = "ok" if done.returncode in (0, 5) else "failed"


# -- item 2: throughput -----------------------------------------------------------------------


def item_throughput(entry: dict, sizes: Sizes, small: bool, seconds: float, report: Report) -> None:
    device = resolve_device("auto")
    cuda = device.type == "cuda"
    deadline = time.perf_counter() + seconds
    torch.manual_seed(0)
    x = torch.rand(sizes.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (sizes.batch,), device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    entry.update(
        backbone=sizes.backbone, batch=sizes.batch, views=sizes.views, samples=sizes.samples,
        rows=[],
    )  # fmt: skip
    # Compiling on the CPU takes minutes: the smoke run traces with the eager backend instead.
    backend = None if cuda else "eager"

    def train(kind: str, precision: str, path: str = "batched", compile_mode=None) -> dict:
        channels_last = precision == "bf16"
        model = build_model(
            "ciiv" if kind == "ciiv" else "plain", sizes.backbone, device,
            views=sizes.views, samples=sizes.samples, channels_last=channels_last,
        )  # fmt: skip
        return train_throughput(
            model, x_cl if channels_last else x, y,
            loss="ciiv" if kind == "ciiv" else "vanilla", path=path, precision=precision,
            compile_mode=compile_mode, compile_backend=backend,
            steps=sizes.train_steps, warmup=sizes.warmup,
        )  # fmt: skip

    def infer(precision: str) -> dict:
        channels_last = precision == "bf16"
        model = build_model(
            "ciiv", sizes.backbone, device, views=sizes.views, samples=sizes.samples,
            channels_last=channels_last,
        )  # fmt: skip
        return inference_throughput(
            model, x_cl if channels_last else x, precision=precision,
            steps=sizes.train_steps, warmup=sizes.warmup,
        )  # fmt: skip

    def pgd(eot: int, precision: str) -> dict:
        row = pgd_eot_throughput(
            device, backbone=sizes.backbone, batch_size=sizes.attack_batch,
            steps=sizes.attack_steps, eot=eot, views=sizes.views,
            samples_per_view=sizes.samples, precision=precision,
        )  # fmt: skip
        keep = ("images_per_s", "peak_memory_mib", "seconds", "forward_passes", "batch_size")
        return {k: row[k] for k in keep}

    steps = sizes.attack_steps
    rows: list[tuple[str, Callable[[], dict], float]] = [
        # (name, measurement, the seconds it must have left to start)
        ("vanilla train bf16+cl", lambda: train("vanilla", "bf16"), 0),
        ("ciiv train fp32", lambda: train("ciiv", "fp32"), 0),
        ("ciiv train bf16+cl", lambda: train("ciiv", "bf16"), 0),
        ("ciiv train bf16+cl+compile", lambda: train("ciiv", "bf16", compile_mode="default"), 60),
        ("ciiv train naive fp32", lambda: train("ciiv", "fp32", "naive"), 0),
        ("ciiv train naive bf16+cl", lambda: train("ciiv", "bf16", "naive"), 0),
        ("ciiv inference fp32", lambda: infer("fp32"), 0),
        ("ciiv inference bf16+cl", lambda: infer("bf16"), 0),
        (f"pgd-{steps} eot1 fp32", lambda: pgd(1, "fp32"), 0),
        (f"pgd-{steps} eot{sizes.eot} fp32", lambda: pgd(sizes.eot, "fp32"), 0),
        (f"pgd-{steps} eot{sizes.eot} bf16", lambda: pgd(sizes.eot, "bf16"), 0),
        (
            "ciiv train bf16+cl+compile cudagraphs",
            lambda: train("ciiv", "bf16", compile_mode="reduce-overhead"),
            45,
        ),
    ]
    if not cuda:  # CUDA graphs need CUDA
        rows.pop()
    for name, measure, needs in rows:
        left = deadline - time.perf_counter()
        if left < (0 if small else needs):
            entry["rows"].append({"name": name, "status": f"skipped: {left:.0f} s left"})
            continue
        log(f"throughput: {name}")
        try:
            row = {"name": name, **measure(), "status": "ok"}
        except ItemTimeout:
            entry["rows"].append({"name": name, "status": "timed_out"})
            raise
        except Exception as exc:  # one failing row must not cost the others
            row = {"name": name, "status": f"error: {type(exc).__name__}: {exc}"[:500]}
        entry["rows"].append(row)
        entry["derived"] = derived(entry["rows"], sizes)
        report.write()
        if cuda:
            torch.cuda.empty_cache()
    entry["status"] = "ok" if all(r["status"] == "ok" for r in entry["rows"]) else "partial"


def derived(rows: list[dict], sizes: Sizes) -> dict:
    """Ratios and the targets, from the rows measured so far."""
    ips = {r["name"]: r["images_per_s"] for r in rows if r.get("status") == "ok"}

    def ratio(a: str, b: str) -> float | None:
        return round(ips[a] / ips[b], 2) if a in ips and b in ips else None

    steps, eot = sizes.attack_steps, sizes.eot
    train = [v for k, v in ips.items() if k.startswith("ciiv train bf16") or k == "ciiv train fp32"]
    measured = {
        "ciiv_train_images_per_s": max(train) if train else None,
        "pgd20_eot1_images_per_s": ips.get(f"pgd-{steps} eot1 fp32"),
        "pgd20_eot8_images_per_s": ips.get(f"pgd-{steps} eot{eot} fp32"),
    }
    return {
        "batched_over_naive_fp32": ratio("ciiv train fp32", "ciiv train naive fp32"),
        "batched_over_naive_bf16": ratio("ciiv train bf16+cl", "ciiv train naive bf16+cl"),
        "bf16_over_fp32_train": ratio("ciiv train bf16+cl", "ciiv train fp32"),
        "compile_over_eager_bf16": ratio("ciiv train bf16+cl+compile", "ciiv train bf16+cl"),
        "bf16_over_fp32_pgd": ratio(f"pgd-{steps} eot{eot} bf16", f"pgd-{steps} eot{eot} fp32"),
        "targets": {
            key: {
                "target": TARGETS[key],
                "measured": value,
                "met": None if value is None else value >= TARGETS[key],
            }
            for key, value in measured.items()
        },  # fmt: skip
    }


# -- items 3 and 4: a real short run, then the bf16 attack against fp32 ----------------------


def synthetic_tarball(folder: Path) -> Path:
    """A tiny image-folder tarball (2 classes, 32 px PNGs; train 12 + test 6 per class)."""
    from PIL import Image

    tree = folder / "tree"
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("test", 6)):
        for label, name in enumerate(("dark", "light")):
            (tree / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = 60 + 120 * label
                pixels = (base + 40 * torch.rand(32, 32, 3, generator=gen)).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(tree / split / name / f"{i}.png")
    archive = folder / "synthetic-imagefolder.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tree / split, arcname=split)
    return archive


def item_real_run(
    entry: dict, sizes: Sizes, data: Path, work: Path, state: dict, report: Report
) -> None:
    from ciiv.evaluate import evaluate_robustness, evaluation_examples
    from ciiv.train import fit, load_config, load_data
    from ciiv.train.loop import resolve_amp

    device = resolve_device("auto")
    overrides = {
        "data.dataset": "imagefolder",
        "data.data_dir": str(data),
        "epochs": sizes.epochs,
        "device": device.type,
        **sizes.real_run_overrides,
    }
    config = load_config("paper-cifar10", overrides)
    amp = resolve_amp(config.amp, device)
    entry.update(data=str(data), overrides=overrides, amp=amp, phases={})
    phases = entry["phases"]

    start = time.perf_counter()
    splits = load_data(config.data)  # extract + decode + cache; fit then reads the cache
    phases["data_s"] = round(time.perf_counter() - start, 2)
    entry["train_examples"], entry["val_examples"] = len(splits.train), len(splits.val)
    report.write()

    log(f"real run: training {sizes.epochs} epoch(s) on {len(splits.train)} images")
    start = time.perf_counter()
    result = fit(config, work / "run")
    phases["train_s"] = round(time.perf_counter() - start, 2)
    keep = ("epoch", "train_loss", "train_acc", "val_acc", "images_per_s", "epoch_time_s")
    entry["epochs"] = [{k: h.get(k) for k in keep} for h in result.history]
    report.write()

    split, _, x, y = evaluation_examples(splits, "imagefolder", None, sizes.n_eval, seed=0)
    state.update(model=result.model, x=x, y=y)
    entry["eval"] = {"split": split, "n_examples": len(y)}
    for protocol in ("full", "paper"):
        log(f"real run: quick suite, {protocol} protocol, {len(y)} images")
        start = time.perf_counter()
        evaluated = evaluate_robustness(
            result.model, x, y, suite="quick", protocol=protocol, draws=sizes.draws,
            eot=sizes.eot, seed=0, audit=False,
        )  # fmt: skip
        phases[f"eval_{protocol}_s"] = round(time.perf_counter() - start, 2)
        summary = evaluated.to_dict()
        entry["eval"][protocol] = {
            key: summary.get(key)
            for key in ("clean_accuracy", "robust_accuracy", "per_attack", "eot", "draws")
        }
        report.write()
    entry["status"] = "ok"


def item_bf16_attack(entry: dict, sizes: Sizes, state: dict, report: Report) -> None:
    from ciiv.attacks import create_attack, default_max_batch
    from ciiv.evaluate import DEFAULT_DRAWS
    from ciiv.evaluate.engine import derive_seed, draw_predictions, seeded

    if "model" not in state:
        entry["status"] = "skipped: the real run produced no model"
        return
    model, x, y = state["model"], state["x"], state["y"]
    device = next(model.parameters()).device
    draws = sizes.draws or DEFAULT_DRAWS
    max_batch = default_max_batch(device)
    model.eval()
    # Only the examples correct in all R clean draws can be robust: attack those, in batches.
    with seeded(derive_seed(0, "gpu_check", "clean"), device):
        clean = torch.cat(
            [
                draw_predictions(model, x[s : s + 128].to(device), draws, max_batch)
                for s in range(0, len(y), 128)
            ],
            dim=1,
        )
    standing = torch.nonzero((clean.cpu() == y).all(0)).flatten()
    entry.update(
        attack=f"pgd-{sizes.attack_steps} eot{sizes.eot} Linf 8/255", draws=draws,
        n_examples=len(y), clean_correct=len(standing),
    )  # fmt: skip
    step = sizes.attack_batch
    chunks = [standing[s : s + step] for s in range(0, len(standing), step)]
    robust: dict[str, torch.Tensor] = {}
    for precision in ("fp32", "bf16"):
        log(f"bf16 attack: PGD-{sizes.attack_steps} EOT {sizes.eot} in {precision}")
        outcome = [torch.zeros(0, dtype=torch.bool)]
        start = time.perf_counter()
        for b, idx in enumerate(chunks):
            xb, yb = x[idx].to(device), y[idx].to(device)
            # The same seeds for both precisions: the same model draws and random starts.
            with seeded(derive_seed(0, "gpu_check", b), device):
                attack = create_attack(
                    "pgd", model, steps=sizes.attack_steps, eot=sizes.eot, eps=8 / 255,
                    max_batch=max_batch, precision=precision, seed=derive_seed(0, "pgd", b),
                )  # fmt: skip
                preds = draw_predictions(model, attack(xb, yb), draws, max_batch)
            outcome.append((preds == yb).all(0).cpu())
        seconds = time.perf_counter() - start
        robust[precision] = torch.cat(outcome)
        entry[precision] = {
            "robust_accuracy": round(robust[precision].sum().item() / len(y), 4),
            "seconds": round(seconds, 2),
            "images_per_s": round(len(standing) / seconds, 2) if len(standing) else None,
        }
        report.write()
    a, b = robust["fp32"], robust["bf16"]
    fp32_only, bf16_only = int((a & ~b).sum()), int((~a & b).sum())
    # Paired comparison (the same examples): the difference is noise while it stays within two
    # standard errors of the discordant count, 2 * sqrt(discordant).
    noise = 2 * math.sqrt(fp32_only + bf16_only)
    entry.update(
        robust_fp32_only=fp32_only,
        robust_bf16_only=bf16_only,
        agree_within_noise=abs(bf16_only - fp32_only) <= max(noise, 1),
        status="ok",
    )


# -- the command ------------------------------------------------------------------------------


def print_table(data: dict) -> None:
    items = data["items"]
    print(f"\nciiv GPU check on {data['device']} (torch {data['torch']}), {data['elapsed_s']} s")
    for name, entry in items.items():
        print(f"\n{name}: {entry.get('status')} ({entry.get('wall_s')} s)")
        if name == "pytest" and "counts" in entry:
            print(f"  {entry['counts']}")
        for row in entry.get("rows", []):
            if row.get("status") != "ok":
                print(f"  {row['name']:<40} {row['status']}")
                continue
            mem = row.get("peak_memory_mib")
            extra = f"  compile {row['compile_s']} s" if "compile_s" in row else ""
            print(
                f"  {row['name']:<40} {row['images_per_s']:>10.1f} img/s  "
                f"peak {'-' if mem is None else f'{mem:.0f} MiB':>9}{extra}"
            )
        if "derived" in entry:
            print(f"  {json.dumps(entry['derived'])}")
        if name == "real_run":
            print(f"  phases {entry.get('phases')}")
            for epoch in entry.get("epochs", []):
                print(f"  epoch {epoch}")
            for protocol in ("full", "paper"):
                if protocol in entry.get("eval", {}):
                    print(f"  {protocol}: {entry['eval'][protocol]}")
        if name == "bf16_attack":
            keys = ("fp32", "bf16", "robust_fp32_only", "robust_bf16_only", "agree_within_noise")
            print("  " + ", ".join(f"{k} {entry.get(k)}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help=f"CIFAR-10-JPEG tarball (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--small", action="store_true", help="CPU smoke run: tiny sizes and data")
    parser.add_argument("--budget", type=float, default=480, help="seconds for all items (480)")
    parser.add_argument("--items", nargs="+", choices=ITEMS, help="run only these (default: all)")
    args = parser.parse_args(argv)

    sizes = SMALL if args.small else FULL
    device = resolve_device("auto")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the training loop sets it
    threads = torch.get_num_threads()
    if args.small:  # tiny tensors: one thread is as fast, and immune to a busy machine's stalls
        torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="ciiv-gpu-check-") as tmp:
            return run(args, sizes, device, Path(tmp), argv)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, sizes: Sizes, device, work: Path, argv) -> int:
    # Extracted and decoded data go to the work folder unless the caller chose a cache.
    os.environ.setdefault("CIIV_CACHE", str(work / "cache"))
    data = args.data
    if args.small and data is None:
        data = synthetic_tarball(work)
    data = data or DEFAULT_DATA
    started = time.perf_counter()
    report = Report(
        args.out,
        {
            "schema": SCHEMA,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(device),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "small": args.small,
            "budget_s": args.budget,
            "sizes": asdict(sizes),
            "argv": sys.argv[1:] if argv is None else argv,
        },
    )
    state: dict = {}
    items: dict[str, Callable[[dict, float], None]] = {
        "pytest": lambda e, s: item_pytest(e, sizes, args.small, s, report),
        "throughput": lambda e, s: item_throughput(e, sizes, args.small, s, report),
        "real_run": lambda e, s: item_real_run(e, sizes, data, work, state, report),
        "bf16_attack": lambda e, s: item_bf16_attack(e, sizes, state, report),
    }
    for name in [n for n in ITEMS if n in (args.items or ITEMS)]:
        left = args.budget - (time.perf_counter() - started)
        seconds = min(sizes.budgets[name], left)
        entry = report.item(name)
        entry["time_box_s"] = round(seconds, 1)
        if seconds < 5:
            entry["status"] = "skipped: the overall budget is spent"
            report.write()
            continue
        log(f"{name} (time box {seconds:.0f} s)")
        start = time.perf_counter()
        try:
            with time_box(seconds):
                items[name](entry, seconds)
        except ItemTimeout as exc:
            entry["status"] = f"timed_out: {exc}"
        except Exception as exc:  # record it, and go on with the next item
            entry["status"] = f"error: {type(exc).__name__}: {exc}"[:1000]
        entry["wall_s"] = round(time.perf_counter() - start, 2)
        report.data["elapsed_s"] = round(time.perf_counter() - started, 1)
        report.write()
    report.data["elapsed_s"] = round(time.perf_counter() - started, 1)
    report.write()
    print_table(report.data)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
