"""Published figures from result files: one source, so no two pages disagree (`make docs`).

    python -m pipeline.tools.docs_figures collect --output OUT --run RUN --name NAME [--minutes M] [--machine TEXT]
    python -m pipeline.tools.docs_figures render [--check]

`collect` copies a scored run's leaderboard row (CV and test NE with their bootstrap intervals,
per-category test NE, networks) and each fold model's epochs, best val NE and img/s into
docs/results/NAME.json, with the wall time and the machine you measured on. `render` rewrites every block between `<!-- figures:KEY -->` and
`<!-- /figures:KEY -->` in README.md and docs/*.md from docs/results/*.json; `--check` exits 1
when a block is stale (tests/unit/tools/test_docs_figures.py runs it). `make bench` writes its
results under OUTPUT; updating the docs from them is this explicit step.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
CATEGORIES = ("blouse", "outwear", "dress", "skirt", "trousers")
BLOCK = re.compile(r"(<!-- figures:(?P<key>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=key) -->)", re.S)


def load(name: str) -> Dict:
    """docs/results/NAME.json, with its file name under "name"."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such result file (docs_figures collect writes it)")
    return {**json.loads(path.read_text()), "name": name}


def _ne(value, lo=None, hi=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.3f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def _present(names) -> List[Dict]:
    """The result files of `names` that exist, loaded, in order."""
    return [load(n) for n in names if (RESULTS / f"{n}.json").exists()]


def results_table() -> str:
    """README's one results table: real photos on a CPU (each machine kind measured), the synthetic demo, anchors."""
    rows = ["| what | data | CV NE | test NE [95 % interval] | networks | wall time |", "|---|---|---|---|---|---|"]
    runs = _present(["real_cpu_k4"]) + [load("real_cpu")] + _present(["real_cpu_intel"]) + [load("demo")]
    for i, r in enumerate(runs):
        rows.append(f"| {r['label']} | {r['data']} | {_ne(r['cv_ne'])} | "
                    f"{_ne(r['test_ne'], r.get('test_ne_lo'), r.get('test_ne_hi'))} | {r.get('models', '—')} | "
                    f"{r['minutes']:.0f} min, {r['machine']} |")
        last_of_its_data = i + 1 == len(runs) or runs[i + 1]["data"] != r["data"]
        if r.get("baseline_test_ne") is not None and last_of_its_data:  # one baseline row per data set
            rows.append(f"| mean shape (baseline) | {r['data']} | — | {_ne(r['baseline_test_ne'])} | 0 | — |")
    for a in load("anchors")["rows"]:
        rows.append(f"| {a['label']} | {a['data']} | — | {_ne(a['test_ne'])} | {a.get('models', '—')} | — |")
    return "\n".join(rows)


def real_cpu_categories(name: str = None) -> str:
    """Per-category CV and test NE of docs/results/NAME.json (default: the current config's run with
    test answers, `real_cpu_k4`, else `real_cpu`), as a markdown table."""
    r = load(name) if name else _present(["real_cpu_k4", "real_cpu"])[0]
    head = "| | " + " | ".join(CATEGORIES) + " | all |"
    sep = "|---" * (len(CATEGORIES) + 2) + "|"
    test = "| test NE | " + " | ".join(_ne(r["per_category_test"].get(c)) for c in CATEGORIES) + \
        f" | {_ne(r['test_ne'])} |"
    cv = "| CV NE | " + " | ".join(_ne(r["per_category_cv"].get(c)) for c in CATEGORIES) + f" | {_ne(r['cv_ne'])} |"
    return "\n".join([head, sep, cv, test])


def real_cpu_runs(names=("real_cpu_k4", "real_cpu_k4_checked", "real_cpu", "real_cpu_intel", "real_cpu_checked",
                         "real_cpu_lite0")) -> str:
    """One row per full-chain run of configs/real_cpu.yaml (docs/results/NAME.json; a missing file is skipped):
    machine, data, wall time, epochs and monitored val NE of each fold model, CV and test NE."""
    rows = ["| result file | machine | data | wall | epochs per fold | fold val NE | CV NE | test NE |",
            "|---|---|---|---|---|---|---|---|"]
    for r in _present(names):
        folds = r.get("folds") or []
        epochs = " / ".join(str(f["epochs"]) for f in folds) or "—"
        val = " / ".join(_ne(f["best_val_ne"]) for f in folds) or "—"
        rows.append(f"| `{r['name']}` | {r['machine']} | {r['data']} | {r['minutes']:.1f} min | {epochs} | {val} | "
                    f"{_ne(r['cv_ne'], r.get('cv_ne_lo'), r.get('cv_ne_hi'))} | "
                    f"{_ne(r['test_ne'], r.get('test_ne_lo'), r.get('test_ne_hi'))} |")
    return "\n".join(rows)


def fold_records(output: Path, run: str) -> List[Dict]:
    """Per fold model of OUTPUT/runs/RUN: epochs trained, best monitored val NE, median img/s (history.csv)."""
    import pandas as pd

    records = []
    for hist in sorted(Path(output, "runs", run).glob("*/fold*/history.csv")):
        h = pd.read_csv(hist)
        if h.empty:
            continue
        records.append({"model": f"{hist.parent.parent.name}/{hist.parent.name}", "epochs": int(len(h)),
                        "best_val_ne": round(float(h["val_ne"].min()), 6),
                        "img_per_s": round(float(h["img_per_s"].median()), 2) if "img_per_s" in h else None})
    return records


def imagenet_check() -> str:
    r = load("imagenet_check")
    return "\n".join(["| conversion | garment class in the top 5 |", "|---|---|",
                      f"| as shipped | {r['garment_top5']:.0%} |",
                      f"| input 0..255 instead of [-1, 1] | {r['garment_top5_input_0_255']:.0%} |",
                      f"| kernels transposed (kh ↔ kw) | {r['garment_top5_kernels_transposed']:.0%} |"])


def libraries() -> str:
    """docs/decisions.md: each hand-written helper against its library (pipeline/tools/library_check.py)."""
    r = load("libraries")
    c, e, cos, b, lk, ph, t = (r[k] for k in ("config", "early_stopping", "cosine", "bootstrap", "lock", "phash",
                                              "tables"))

    def yn(flag) -> str:
        return "yes" if flag else "no"

    rows = [f"Measured on a {r['machine']}.", "",
            "| our code | library | measured | decision |", "|---|---|---|---|",
            f"| config loader (`pipeline/config.py`) | OmegaConf 2.3 | a wrong-typed value: does the error name the "
            f"file? ours {yn(c['ours_names_file'])}, OmegaConf's structured merge {yn(c['omegaconf_names_file'])} "
            f"(\"{c['omegaconf_message'][:60]}...\") | kept: errors must name the file |",
            f"| early stopping, plateau, checkpoints, NaN (`fit/callbacks.py` Monitor) | `keras.callbacks` | killed "
            f"{e['kill_after']} epochs after the best and resumed, EarlyStopping(patience={e['patience']}) trains "
            f"{e['keras_epochs_past_best']} epochs past the best, ours {e['ours_epochs_past_best']} (its wait "
            "lives in the resume state) | kept; the NaN stop is one callback beside it |",
            f"| cosine with warm-up (`fit/schedule.py`) | `CosineDecay` | the same curve (largest relative "
            f"difference {cos['max_rel_diff']:.1e}, a test checks it); {cos['ours_us']:.1f} µs against "
            f"{cos['keras_us']:.0f} µs per step | kept: it also reads the time budget |",
            f"| bootstrap (`scoring/metrics.py`) | `scipy.stats.bootstrap` | {b['n_images']} images, "
            f"{b['resamples']} resamples: [{b['ours'][0]:.4f}, {b['ours'][1]:.4f}] against percentile "
            f"[{b['scipy_percentile'][0]:.4f}, {b['scipy_percentile'][1]:.4f}], BCa [{b['scipy_bca'][0]:.4f}, "
            f"{b['scipy_bca'][1]:.4f}]; {b['ours_ms']:.0f} against {b['scipy_percentile_ms']:.0f} ms | kept: the "
            "leaderboard pairs every row on the same resampled images |",
            f"| file locks (`fsutil.file_lock`) | filelock {lk['filelock']} | the same `fcntl.flock` call: "
            f"{yn(lk['filelock_uses_flock'])}; the held file names its holder in {lk['ours_bytes']} bytes, "
            f"filelock's holds {lk['filelock_bytes']} | kept: a waiting run says who holds the lock |",
            f"| perceptual hash (`prep/images.phash`) | imagehash {ph['imagehash']} | {ph['images']} {ph['source']}: "
            f"a half-size JPEG-70 copy {ph['ours_copy_bits']:.2f} bits apart (imagehash "
            f"{ph['imagehash_copy_bits']:.2f}), another image {ph['ours_other_bits']:.1f} "
            f"({ph['imagehash_other_bits']:.1f}); {ph['ours_ms']:.2f} against {ph['imagehash_ms']:.2f} ms an image "
            "| kept: as sharp, faster, and no PyWavelets |",
            f"| tables | tabulate {t['tabulate']} | the leaderboard is pandas' `to_string` already; "
            f"`format_board` is {t['ours_lines_of_code']} lines; pandas' `to_markdown` itself needs tabulate: "
            f"{yn(t['pandas_to_markdown_needs_tabulate'])} | kept: pandas, no new dependency |"]
    return "\n".join(rows)


RENDERERS: Dict[str, Callable[[], str]] = {
    "results": results_table, "real_cpu_categories": real_cpu_categories, "imagenet_check": imagenet_check,
    "real_cpu_lite0_categories": lambda: real_cpu_categories("real_cpu_lite0"),
    "libraries": libraries, "real_cpu_runs": real_cpu_runs,
}


def pages() -> List[Path]:
    return [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))


def render_text(text: str, where: str = "") -> str:
    def block(m):
        key = m.group("key")
        if key not in RENDERERS:
            raise KeyError(f"{where}: unknown figures block {key!r}; known: {sorted(RENDERERS)}")
        return m.group(1) + RENDERERS[key]() + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def render(check: bool = False) -> List[Path]:
    """Rewrite (or, with `check`, list) the pages whose figures blocks differ from the results."""
    from pipeline.fsutil import write_text_atomic

    stale = []
    for page in pages():
        text = page.read_text()
        new = render_text(text, str(page))
        if new != text:
            stale.append(page)
            if not check:
                write_text_atomic(page, new)
    return stale


def collect(output: Path, run: str, name: str, minutes: float, machine: str, label: str, data: str) -> Path:
    """docs/results/NAME.json from OUTPUT/leaderboard.csv's row of `run` (and its baseline's)."""
    import pandas as pd

    board = pd.read_csv(Path(output) / "leaderboard.csv")
    rows = board[board["name"] == run]
    if rows.empty:
        raise SystemExit(f"docs_figures: no leaderboard row {run!r} in {output}/leaderboard.csv")
    row = rows.iloc[0]

    def num(key):
        v = row.get(key)
        return None if v is None or pd.isna(v) else float(v)

    base = board[board["name"].astype(str).str.startswith("meanshape")]
    result = {
        "label": label, "data": data, "run": run, "minutes": minutes, "machine": machine,
        "cv_ne": num("cv_ne"), "cv_ne_lo": num("cv_ne_lo"), "cv_ne_hi": num("cv_ne_hi"),
        "test_ne": num("test_ne"), "test_ne_lo": num("test_ne_lo"), "test_ne_hi": num("test_ne_hi"),
        "models": None if pd.isna(row.get("models")) else int(row.get("models")),
        "per_category_cv": {c: num(f"cv_ne_{c}") for c in CATEGORIES},
        "per_category_test": {c: num(f"test_ne_{c}") for c in CATEGORIES},
        "baseline_test_ne": float(base.iloc[0]["test_ne"]) if len(base) and not pd.isna(base.iloc[0]["test_ne"]) else None,
        "folds": fold_records(output, run),
    }
    from pipeline.fsutil import write_text_atomic

    path = RESULTS / f"{name}.json"
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--output", type=Path, required=True)
    c.add_argument("--run", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--minutes", type=float, required=True, help="wall minutes of the chain, install included")
    c.add_argument("--machine", required=True, help="e.g. '2-core Intel Xeon (AMX)'")
    c.add_argument("--label", required=True)
    c.add_argument("--data", required=True)
    r = sub.add_parser("render")
    r.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "collect":
        print(f"docs_figures: {collect(args.output, args.run, args.name, args.minutes, args.machine, args.label, args.data)}")
        return 0
    stale = render(args.check)
    if args.check and stale:
        print("stale figures in " + ", ".join(str(p.relative_to(REPO)) for p in stale) + ": run `make docs`",
              file=sys.stderr)
        return 1
    print("docs_figures: " + (", ".join(str(p.relative_to(REPO)) for p in stale) or "nothing") + " rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
