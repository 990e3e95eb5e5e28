"""Scale rehearsal (`make rehearse`): the pipeline's stages on a synthetic set of the real size.

The real FashionAI set has 31,631 training + 12,534 warm-up images and about
10,000 test images. This module generates a synthetic set of that size times
SCALE with `pipeline.synth`'s own generator, then measures:

* preprocess (`python -m pipeline.stages.preprocess --force`, a fresh process each) at
  the demo (128 px) and the full (384 px) configs' input sizes: wall-clock,
  peak RSS of the process tree (joblib workers included, polled every 50 ms)
  and disk (allocated blocks of the dataset directory and of each cache);
* peak RSS at two image counts (the set and its first half) — it must stay flat;
* prediction with flip TTA (`predict.predict_images`) of the demo model
  (untrained: timing only) per 1,000 test images from the demo cache;
* `preprocess_speedup`: `preprocess.preprocess(force=True)` in this process vs
  a plain single-process `cv2.imread` + `cv2.resize` loop run in a fresh
  interpreter (`python -m pipeline.tools.rehearse plain-loop`), alternating, median
  of the paired ratios.

Results: OUTPUT/rehearse/results.json, and the section between
`<!-- rehearse:start -->` and `<!-- rehearse:end -->` of docs/benchmarks.md.
Figures at SCALE < 1 are measured at that scale; the full-size figures next to
them are linear extrapolations and labelled as such.

CLI: python -m pipeline.tools.rehearse --output DIR [--scale 1.0] [--steps data,preprocess,predict,speed]
     python -m pipeline.tools.rehearse plain-loop SOURCE SIZE REPS      (the baseline, prints JSON)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[2]
REAL = {"train": 31631, "train_warm": 12534, "test": 10000}
CONFIGS = {"demo": REPO / "configs" / "demo.yaml", "full": REPO / "configs" / "full.yaml"}
START, END = "<!-- rehearse:start -->", "<!-- rehearse:end -->"


# --------------------------------------------------------------------------- measuring helpers


def image_files(source: Path) -> List[Path]:
    """Every image file of a data set in the competition layout (all splits), sorted."""
    return sorted(p for images in sorted(Path(source).glob("*/Images")) for p in images.rglob("*") if p.is_file())


def plain_loop(files: Sequence[Path], size: int) -> Dict:
    """The baseline: a plain single-process, single-thread cv2.imread + cv2.resize loop.

    Returns wall and CPU seconds of the loop alone (imports and startup excluded).
    """
    import cv2

    cv2.setNumThreads(1)
    wall, cpu = time.perf_counter(), time.process_time()
    for path in files:
        cv2.resize(cv2.imread(str(path)), (size, size))
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu, "n": len(files),
            "foreign_modules": sorted(m for m in ("sklearn", "tensorflow", "pandas") if m in sys.modules)}


def plain_loop_fresh(source: Path, size: int, reps: int = 1) -> List[Dict]:
    """`plain_loop` over every image of `source`, in a fresh interpreter (nothing else imported)."""
    out = subprocess.run([sys.executable, "-m", "pipeline.tools.rehearse", "plain-loop", str(source), str(size), str(reps)],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tree_rss(proc) -> int:
    """Summed RSS (bytes) of a psutil.Process and all its descendants."""
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_measured(cmd: Sequence[str], log: Path, interval: float = 0.05) -> Dict:
    """Run `cmd` (output to `log`), polling the RSS of its process tree; returns seconds, peak_rss, rc."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    start, peak = time.perf_counter(), 0
    with open(log, "w") as f:
        proc = subprocess.Popen(list(cmd), cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = max(peak, tree_rss(watched))
            time.sleep(interval)
    return {"seconds": time.perf_counter() - start, "peak_rss": peak, "rc": proc.returncode}


def disk_bytes(path: Path) -> int:
    """Allocated bytes (st_blocks) of every file under `path`: sparse cache files count what they hold."""
    path = Path(path)
    if not path.exists():
        return 0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2


# --------------------------------------------------------------------------- data


def per_category(scale: float) -> Dict[str, int]:
    """Synthetic images per category and split for `scale` × the real set's size."""
    return {split: max(4, math.ceil(n * scale / 5)) for split, n in REAL.items()}


def make_data(root: Path, scale: float) -> Dict:
    """Generate (or reuse) the SCALE× set with pipeline.tools.synth.generate; returns its summary."""
    from pipeline.tools import synth

    counts = per_category(scale)
    start = time.perf_counter()
    summary = synth.generate(root, counts["train"], counts["test"], seed=0, warm_per_cat=counts["train_warm"],
                             progress=sys.stderr.isatty())
    return {"per_category": counts, "images": summary["images"], "reused": bool(summary.get("skipped")),
            "seconds": round(time.perf_counter() - start, 1)}


def half_set(source: Path, target: Path) -> Path:
    """The first half of every split of `source` (images hard-linked, CSVs cut): the smaller RSS point."""
    import pandas as pd

    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    for csv in [*source.glob("*/Annotations/*.csv"), source / "test" / "test.csv"]:
        if not csv.exists():
            continue
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        half = frame.iloc[::2]  # every other row: half of every category
        out = target / csv.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        half.to_csv(out, index=False)
        split_dir = csv.parent.parent if csv.parent.name == "Annotations" else csv.parent
        for iid in half["image_id"]:
            dst = target / split_dir.relative_to(source) / iid
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.link(split_dir / iid, dst)
    (target / ".complete").write_text("")
    return target


# --------------------------------------------------------------------------- steps


def measure_preprocess(source: Path, work: Path, logs: Path, name: str) -> Dict:
    """`python -m pipeline.stages.preprocess --force` with the demo and the full config: time, peak RSS, disk."""
    from pipeline.config import load_config
    from pipeline.store.layout import cache_dir

    out = {}
    for cfg_name, cfg_path in CONFIGS.items():
        cfg = load_config(cfg_path)
        target = work / f"prep_{name}_{cfg_name}"
        cmd = [sys.executable, "-m", "pipeline.stages.preprocess", "--input", str(source), "--output", str(target),
               "--config", str(cfg_path), "--run", f"rehearse_{cfg_name}", "--force"]
        result = run_measured(cmd, logs / f"preprocess_{name}_{cfg_name}.log")
        if result["rc"] != 0:
            raise RuntimeError(f"preprocess exited with {result['rc']}: see {logs / f'preprocess_{name}_{cfg_name}.log'}")
        ds = next((target / "prep").glob("ds-*"))
        manifest = json.loads((ds / "manifest.json").read_text())
        cdir = cache_dir(ds, cfg.model.input_size, cfg.model.margin)
        n_images = manifest["n_candidates"] + manifest["n_test_rows"]
        out[cfg_name] = {
            "input_size": cfg.model.input_size, "n_images": n_images, "seconds": round(result["seconds"], 1),
            "img_per_s": round(n_images / result["seconds"], 1), "peak_rss_mib": round(result["peak_rss"] / 2**20, 1),
            "cache_bytes": disk_bytes(cdir), "dataset_bytes_without_cache": disk_bytes(ds) - disk_bytes(ds / "cache"),
            "n_rejected": manifest["n_rejected"], "duplicates": manifest.get("report", {}).get("duplicates"),
        }
    return out


def measure_prediction(work: Path, name: str, n_max: int = 1000) -> Dict:
    """Seconds per 1,000 test images of flip-TTA prediction with the demo model (untrained)."""
    from pipeline import hardware
    from pipeline.config import load_config
    from pipeline.heatmap.inference import predict_images
    from pipeline.keypoints import CATEGORY_KEYPOINTS, category_flip_index
    from pipeline.models import build_model
    from pipeline.store.rundata import load_cache, load_index

    cfg = load_config(CONFIGS["demo"])
    hardware.setup_inference(cfg)
    ds = next((work / f"prep_{name}_demo" / "prep").glob("ds-*"))
    test = load_index(ds, "test", cfg.model.input_size, cfg.model.margin)
    cache = load_cache(ds, "test", cfg.model.input_size, cfg.model.margin)
    category = "dress"
    cfg = cfg.for_category(category)  # its own head and predict settings under a `categories:` override
    model = build_model(cfg, len(CATEGORY_KEYPOINTS[category]))
    n = min(n_max, len(test.image_id))
    images, params = cache[test.cache_row[:n]], test.params[:n]
    flip = category_flip_index(category)
    predict_images(model, images[: cfg.predict.batch_size], params[: cfg.predict.batch_size], cfg, flip)  # warm-up
    start = time.perf_counter()
    predict_images(model, images, params, cfg, flip)
    seconds = time.perf_counter() - start
    return {"n_images": n, "seconds": round(seconds, 2), "seconds_per_1000": round(seconds * 1000 / n, 1),
            "flip_tta": bool(cfg.predict.flip_tta), "batch_size": cfg.predict.batch_size, "model": "demo (untrained)"}


def measure_speedup(source: Path, work: Path, reps: int = 3) -> Dict:
    """preprocess(force=True) here vs the plain loop in a fresh interpreter; median of paired ratios."""
    from pipeline.config import load_config
    from pipeline.prep.preprocess import preprocess

    cfg = load_config(CONFIGS["demo"])
    n = len(image_files(source))

    def ours() -> Dict:
        wall, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            preprocess(source, work / "speed", cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed, jobs=-1,
                       categories=cfg.data.categories, force=True, margin=cfg.model.margin)
        return {"seconds": time.perf_counter() - wall, "cpu_seconds_main": time.process_time() - cpu}

    ours()
    plain_loop_fresh(source, cfg.model.input_size)  # warm-up: page cache, both sides
    pairs = []
    for _ in range(reps):
        p = plain_loop_fresh(source, cfg.model.input_size)[0]
        o = ours()
        pairs.append({"plain_s": round(p["seconds"], 3), "ours_s": round(o["seconds"], 3),
                      "ratio": round(p["seconds"] / o["seconds"], 3)})
    jobs = 1
    with contextlib.suppress(Exception):
        from pipeline.hardware import available_cores

        jobs = available_cores()
    return {"preprocess_speedup": round(median([p["ratio"] for p in pairs]), 2), "n_images": n, "pairs": pairs,
            "cores": jobs, "input_size": cfg.model.input_size,
            "how": "preprocess.preprocess(force=True, jobs=-1) in-process vs plain_loop in a fresh interpreter"}


# --------------------------------------------------------------------------- report


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**28 else f"{b / 2**20:.0f} MiB"


def markdown(results: Dict) -> str:
    """The docs/benchmarks.md section (between the rehearse markers)."""
    scale = results["scale"]
    full = 1.0 / scale
    load = results.get("load_average_at_start"), results.get("load_average_at_end")
    lines = [START, f"Measured {results['date']} on {results['cores']} core(s), `make rehearse SCALE={scale:g}` "
             f"({results['command']})."
             + (f" Load average (1, 5, 15 min) at the start {load[0]}, at the end {load[1]}: with more runnable "
                "processes than cores, every wall-clock figure below is stretched accordingly." if all(load) else ""),
             ""]
    data = results.get("data")
    if data:
        imgs = data["images"]
        lines += [f"Synthetic set at SCALE {scale:g}: {imgs.get('train', 0)} train + {imgs.get('train_warm', 0)} "
                  f"warm-up + {imgs.get('test', 0)} test images (real: 31,631 + 12,534 + ~10,000).", ""]
    prep = results.get("preprocess")
    if prep:
        lines += ["| Preprocess (`--force`) | images | wall-clock | peak RSS (tree) | cache on disk | rest of prep "
                  "| **extrapolated to 54,165 images** (wall, disk) |", "|---|---:|---:|---:|---:|---:|---|"]
        for set_name, per_cfg in prep.items():
            for cfg_name, r in per_cfg.items():
                k = 54165 / r["n_images"]
                lines.append(
                    f"| {cfg_name} ({r['input_size']} px), {set_name} | {r['n_images']} | {r['seconds']:.0f} s "
                    f"| {r['peak_rss_mib']:.0f} MiB | {_gib(r['cache_bytes'])} | {_gib(r['dataset_bytes_without_cache'])} "
                    f"| extrapolation: {r['seconds'] * k / 60:.0f} min, {_gib((r['cache_bytes'] + r['dataset_bytes_without_cache']) * k)} |")
        lines.append("")
        rss = results.get("rss_flat")
        if rss:
            lines += [f"Peak RSS as the image count doubles ({rss['small_images']} → {rss['large_images']} images, "
                      f"demo size): {rss['small_mib']:.0f} → {rss['large_mib']:.0f} MiB, ratio **{rss['ratio']:.2f}** "
                      "(pixels are never held: the workers write the cache with pwrite; what grows with the "
                      "count is per-row metadata — ids, keypoints, index tables).", ""]
        lines += ["Disk a user needs for the cache: (train rows + test rows) × S² × 3 bytes; for the real "
                  f"54,165 images that is {_gib(54165 * 128 * 128 * 3)} at 128 px (demo) and "
                  f"{_gib(54165 * 384 * 384 * 3)} at 384 px (full), plus the input images themselves"
                  + (f" (the synthetic JPEGs: {_gib(results['data_bytes'])} at this scale, extrapolation "
                     f"{_gib(results['data_bytes'] / scale)} at full size)" if results.get("data_bytes") else "")
                  + ".", ""]
    pred = results.get("predict")
    if pred:
        lines += [f"Prediction with flip TTA, demo model ({pred['model']}), batch {pred['batch_size']}: "
                  f"**{pred['seconds_per_1000']:.1f} s per 1,000 test images** ({pred['n_images']} timed); "
                  f"extrapolation to 10,000 test images: {pred['seconds_per_1000'] * 10:.0f} s per fold model.", ""]
    speed = results.get("speed")
    if speed:
        lines += [f"`preprocess_speedup` (demo size, {speed['n_images']} images, {speed['cores']} core(s)): "
                  f"**{speed['preprocess_speedup']:.2f}** — {speed['how']}; pairs: "
                  + ", ".join(f"{p['plain_s']:.2f}/{p['ours_s']:.2f} s" for p in speed["pairs"]) + ".", ""]
    if scale < 1:
        lines += [f"All figures above were measured at SCALE {scale:g}; every \"extrapolation\" multiplies by "
                  f"{full:.0f}× (linear in the image count, which the flat RSS supports) and is not a measurement.", ""]
    lines.append(END)
    return "\n".join(lines)


def write_docs(docs: Path, section: str) -> None:
    """Replace the rehearse section of `docs` (appended under a heading when absent)."""
    from pipeline.fsutil import write_text_atomic

    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Scale rehearsal (`make rehearse`)\n\n" + section + "\n"
    write_text_atomic(docs, text)


# --------------------------------------------------------------------------- main


def rehearse(output: Path, scale: float, steps: Sequence[str], docs: Path) -> Dict:
    from pipeline.fsutil import write_text_atomic

    root = Path(output) / "rehearse"
    logs = root / "logs"
    results_path = root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if results.get("scale") != scale:
        results = {}
    from pipeline.hardware import available_cores

    cores = available_cores()
    results.update({"scale": scale, "cores": cores, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
                    "command": f"python -m pipeline.tools.rehearse --output {output} --scale {scale:g}"})
    data = root / f"data_s{scale:g}"

    def save():
        write_text_atomic(results_path, json.dumps(results, indent=2, sort_keys=True))

    if "data" in steps:
        print(f"rehearse: generating the SCALE {scale:g} synthetic set in {data} ...", flush=True)
        results["data"] = make_data(data, scale)
        print(f"rehearse: data {results['data']}", flush=True)
        save()
    if "preprocess" in steps:
        half = half_set(data, root / f"data_s{scale:g}_half")
        results["preprocess"] = {}
        for name, source in (("full set", data), ("half set", half)):
            print(f"rehearse: preprocess of the {name} ...", flush=True)
            results["preprocess"][name] = measure_preprocess(source, root / "work", logs, name.split()[0])
            print(f"rehearse: {results['preprocess'][name]}", flush=True)
            save()
        big, small = results["preprocess"]["full set"]["demo"], results["preprocess"]["half set"]["demo"]
        results["rss_flat"] = {"small_images": small["n_images"], "large_images": big["n_images"],
                               "small_mib": small["peak_rss_mib"], "large_mib": big["peak_rss_mib"],
                               "ratio": round(big["peak_rss_mib"] / small["peak_rss_mib"], 3)}
        results["data_bytes"] = disk_bytes(data)
        save()
    if "predict" in steps:
        print("rehearse: timing flip-TTA prediction ...", flush=True)
        results["predict"] = measure_prediction(root / "work", "full")
        print(f"rehearse: {results['predict']}", flush=True)
        save()
    if "speed" in steps:
        print("rehearse: preprocess_speedup ...", flush=True)
        results["speed"] = measure_speedup(root / f"data_s{scale:g}_half", root / "work")
        print(f"rehearse: {results['speed']}", flush=True)
        save()
    results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    save()
    write_docs(docs, markdown(results))
    print(f"rehearse: {results_path}, section written to {docs}")
    return results


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plain-loop"]:
        source, size, reps = Path(argv[1]), int(argv[2]), int(argv[3])
        files = image_files(source)
        print(json.dumps([plain_loop(files, size) for _ in range(reps)]))
        return 0
    parser = argparse.ArgumentParser(description="Scale rehearsal on a synthetic set of the real size × SCALE.")
    parser.add_argument("--output", default="output")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real set's size (default 1)")
    parser.add_argument("--steps", default="data,preprocess,predict,speed")
    parser.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        print(f"rehearse: error: --scale {args.scale} must be in (0, 1]", file=sys.stderr)
        return 2
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(steps) - {"data", "preprocess", "predict", "speed"}
    if unknown:
        print(f"rehearse: error: unknown step(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    rehearse(Path(args.output), args.scale, steps, Path(args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
