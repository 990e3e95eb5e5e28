"""Bench harness: modes, subprocesses (logged, timed, RSS-polled), results.json, the CLI.

The measures (pipeline/tools/bench/measures.py) run as steps of `Bench`; TensorFlow
work runs in worker subprocesses (`python -m pipeline.tools.bench --worker NAME`) or
in the pipeline's own CLIs (`python -m pipeline.stages.train`), so precision policies
and thread settings never leak between configurations, and a crash costs only
its own keys: a failing measurement records an `error` string instead of
stopping the bench.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from pipeline.fsutil import write_text_atomic
from pipeline.hardware import available_cores, cpu_flags
from pipeline.tools.bench.table import format_value, make_entry

REPO = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SEED_CONFIG = REPO / "configs" / "seed_cpm.yaml"
REAL_CONFIG = REPO / "configs" / "real_cpu.yaml"
THROUGHPUT_CATEGORY = "dress"   # most keypoints (15): the largest output head
PRECISION_CATEGORY = "skirt"    # bf16 vs fp32 NE comparison (full mode)


@dataclasses.dataclass(frozen=True)
class Mode:
    """Sizes and repetitions of one bench mode."""

    train_per_cat: int          # synthetic training images per category (NE, throughput, decode floor)
    test_per_cat: int           # synthetic test images per category (NE, TTA timing)
    scale_train_per_cat: int    # 1× data set of the RSS measurement (4× has four times as many)
    scale_test_per_cat: int
    budget_s: float             # training wall-clock budget per model (train.time_budget_s)
    steps: int                  # timed training steps per throughput measurement
    reps: int                   # repetitions of each timing (ratios: median over back-to-back pairs)
    matmul_s: float             # seconds per matmul timing window
    precision_ne: bool          # also train fp32 vs bf16 on PRECISION_CATEGORY
    heads_all_categories: bool  # NE-per-compute heads on every category (else THROUGHPUT_CATEGORY only)
    real_budget_s: float = 600.0  # real-photo step (REAL=): training budget of each head's fold-0 model


MODES = {
    "quick": Mode(80, 20, 25, 6, 15.0, 8, 4, 1.0, False, False, 60.0),
    "full": Mode(160, 40, 100, 25, 120.0, 25, 5, 1.5, True, True, 600.0),
}
SCALE = 4


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_text() -> str:
    """CPU model, its bf16/AMX/AVX-512 support and the cores this process may use."""
    flags = cpu_flags()
    features = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags] or ["no AVX-512"]
    return f"{cpu_model()} ({', '.join(features)}), {available_cores()} core(s)"


def package_version(*names: str) -> str:
    """Installed version of the first of `names` found (without importing it)."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def subprocess_env() -> Dict[str, str]:
    """Environment of the subprocesses: the repository importable, quiet TF, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tail(path: Path, lines: int = 5) -> str:
    """Last `lines` non-empty lines of a log file."""
    try:
        text = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def run_logged(cmd: Sequence[str], log: Path, timeout: float) -> Tuple[int, float]:
    """Run `cmd` (cwd: repository root) with its output in `log`; returns (exit code, seconds).

    On timeout its process group is killed and the exit code is -9.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -9
    return rc, time.perf_counter() - start


def tree_rss(proc) -> Tuple[int, int]:
    """(RSS, RSS minus shared pages) in bytes summed over a psutil process and its descendants."""
    import psutil

    total = anon = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            mem = p.memory_info()
        except psutil.Error:
            continue
        total += mem.rss
        anon += mem.rss - getattr(mem, "shared", 0)
    return total, anon


def peak_tree_rss(cmd: Sequence[str], log: Path, interval: float = 0.02, timeout: float = 1800) -> Dict:
    """Run `cmd`, polling the RSS of its process tree every `interval` s.

    Returns peak_rss and peak_anon (bytes), seconds and rc.
    """
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    peak = peak_anon = 0
    with open(log, "w") as f:
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss, anon = tree_rss(watched)
            peak, peak_anon = max(peak, rss), max(peak_anon, anon)
            if time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(interval)
    return {"peak_rss": peak, "peak_anon": peak_anon, "seconds": time.perf_counter() - start,
            "rc": proc.returncode}


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over repetitions i of numerators[i] / denominators[i].

    Each pair was measured back to back, so a load change on a shared machine
    mostly cancels within a pair, and the median drops the pairs it did not.
    """
    ratios = [a / b for a, b in zip(numerators, denominators) if a is not None and b]
    if not ratios:
        raise ValueError("no complete pair of measurements")
    return float(np.median(ratios))


def attempt(out: Dict, key: str, fn: Callable[[], object]):
    """out[key] = fn(), or {'error': ...} when it raises; returns the value (None on error)."""
    try:
        out[key] = fn()
        return out[key]
    except Exception as err:  # noqa: BLE001 - one failing measurement must not stop the others
        traceback.print_exc()
        out[key] = {"error": f"{type(err).__name__}: {err}"}
        return None


class Bench:
    """Runs the steps of one bench mode, recording every key in results.json as it goes."""

    def __init__(self, output, mode: str, command: str, real=None):
        self.mode_name, self.mode = mode, MODES[mode]
        self.real = Path(real) if real else None  # real photos in the competition layout (REAL=), optional
        self.root = Path(output) / "bench"
        self.data, self.work = self.root / "data", self.root / "work"
        self.logs, self.worker_dir = self.root / "logs", self.root / "workers"
        self.started = time.perf_counter()
        self.results_path = self.root / "results.json"
        self.data_error: Optional[str] = None
        self.results: Dict = {
            "meta": {"cpu": cpu_model(), "machine": machine_text(), "cores": available_cores(),
                     "python": platform.python_version(),
                     "tf_version": package_version("tensorflow-cpu", "tensorflow", "tensorflow-macos"),
                     "dtype": None, "mode": mode, "budget_s_per_model": self.mode.budget_s,
                     "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "command": command, "host": platform.node(), "runtime_s": None,
                     "mode_settings": dataclasses.asdict(self.mode)},
            "keys": {},
            "heads": {},
            "real_heads": {},
        }

    # ---------------------------------------------------------------- bookkeeping

    def log(self, msg: str) -> None:
        print(f"[bench {time.perf_counter() - self.started:6.0f} s] {msg}", flush=True)

    def record(self, key: str, value=None, error: Optional[str] = None, **detail) -> None:
        self.results["keys"][key] = make_entry(key, value, error, **detail)
        entry = self.results["keys"][key]
        verdict = "" if entry["pass"] is None else (" PASS" if entry["pass"] else " FAIL")
        shown = f"error: {error}" if error else f"{format_value(entry['value'])}"
        self.log(f"  {key} = {shown}{' (goal ' + entry['goal'] + ')' if entry['goal'] else ''}{verdict}")

    def save(self) -> None:
        """results.json (results_steps.json for a --steps subset, so a complete run's file survives)."""
        self.results["meta"]["runtime_s"] = round(time.perf_counter() - self.started, 1)
        write_text_atomic(self.results_path, json.dumps(self.results, indent=2, default=str))

    def run_step(self, number: int, total: int, name: str, keys: Sequence[str], fn: Callable[[], None]) -> None:
        """Run one step; keys it did not record get its error (or 'not measured')."""
        self.log(f"step {number}/{total}: {name}")
        start = time.perf_counter()
        error = None
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            error = f"{type(err).__name__}: {err}"
        for key in keys:
            if key not in self.results["keys"]:
                self.record(key, error=error or "not measured")
        self.log(f"step {name} done in {time.perf_counter() - start:.0f} s" + (f" (error: {error})" if error else ""))
        self.save()

    def run_worker(self, name: str, timeout: float, tag: str = "", **kwargs) -> Dict:
        """Run WORKERS[name](**kwargs) in a subprocess; its JSON result (RuntimeError when it fails)."""
        label = f"{name}{'_' + tag if tag else ''}"
        out = self.worker_dir / f"{label}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pipeline.tools.bench", "--worker", name, "--worker-args", json.dumps(kwargs),
               "--worker-out", str(out)]
        rc, seconds = run_logged(cmd, self.logs / f"{label}.log", timeout)
        if rc != 0 or not out.exists():
            raise RuntimeError(f"worker {label} exited with {rc} after {seconds:.0f} s: "
                               f"{tail(self.logs / f'{label}.log', 3)}")
        self.log(f"  worker {label}: {seconds:.0f} s")
        return json.loads(out.read_text())

    def need_data(self) -> None:
        if self.data_error:
            raise RuntimeError(f"bench data unavailable ({self.data_error})")

    def bind(self, run: str, config: Path, overrides: Sequence[str] = (), input_dir=None) -> Dict:
        """Bind `run` to the prep artifacts of the bench data (or `input_dir`) for `config`
        (pipeline.stages.preprocess.preprocess).

        Returns preprocess's summary (builds what is missing; nothing already built is redone).
        """
        from pipeline.config import load_config
        from pipeline.prep.preprocess import preprocess

        cfg = load_config(config, list(overrides))
        return preprocess(input_dir or self.data, self.work, cfg.cache_size, cfg.data.folds, cfg.data.fold_seed,
                          cfg.data.jobs, cfg.data.categories, margin=cfg.model.margin, run=run,
                          models=cfg.data.fold_models)

    def train_one(self, config: Path, run: str, category: str, extra: Sequence[str] = (),
                  budget: Optional[float] = None, epochs: int = 1000, patience: Optional[int] = 1000,
                  input_dir=None) -> Dict:
        """Fold 0 of `category` trained by `python -m pipeline.stages.train` for `budget` s (the mode's); its metrics.

        patience None keeps the config's early stopping; input_dir: another data set (real photos).
        """
        budget = self.mode.budget_s if budget is None else budget
        sets = [f"train.time_budget_s={budget}", f"train.epochs={epochs}", *extra]
        if patience is not None:
            sets.append(f"train.patience={patience}")
        if input_dir is None:
            self.need_data()
        self.bind(run, config, extra, input_dir)
        cmd = [sys.executable, "-m", "pipeline.stages.train", "--output", str(self.work), "--config", str(config),
               "--run", run, "--category", category, "--fold", "0", "--force"]
        for s in sets:
            cmd += ["--set", s]
        log = self.logs / f"train_{run}_{category}.log"
        rc, wall = run_logged(cmd, log, timeout=4 * budget + 600)
        metrics_path = self.work / "runs" / run / category / "fold0" / "metrics.json"
        if rc != 0 or not metrics_path.exists():
            self.log(f"  train {run} {category}: FAILED (exit {rc}): {tail(log, 2)}")
            return {"error": f"exit {rc}: {tail(log, 1)}", "wall_s": wall}
        m = json.loads(metrics_path.read_text())
        self.log(f"  train {run} {category}: {m['epochs']} epochs in {m['seconds']:.0f} s "
                 f"({m['train_img_per_s']:.1f} img/s, {m['precision']}), wall {wall:.0f} s, "
                 f"val NE {m['val_ne']:.4f}")
        return {"wall_s": wall, "epochs": m["epochs"], "train_s": m["seconds"], "val_ne": m["val_ne"],
                "img_per_s": m["train_img_per_s"], "precision": m["precision"], "params": m.get("params")}

    def run(self, table: Sequence, steps: Optional[Sequence[str]] = None) -> Dict:
        """Run every step of `table` (measures.STEPS: (name, fn, keys) rows), or only `steps` plus
        the data step; returns the results."""
        if steps is not None:
            self.results_path = self.root / "results_steps.json"
        chosen = [(n, fn, k) for n, fn, k in table if steps is None or n in steps or n == "data"]
        for i, (name, fn, keys) in enumerate(chosen, 1):
            if name == "ne" and self.mode.precision_ne:
                keys = keys + ("ne_bf16_vs_fp32",)
            self.run_step(i, len(chosen), name, keys, lambda fn=fn: fn(self))
        self.log(f"done in {(time.perf_counter() - self.started) / 60:.1f} min → {self.results_path}")
        return self.results
