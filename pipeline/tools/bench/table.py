"""The bench's goals and tables: results.json entries, docs/benchmarks.md and the README block."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from pipeline.fsutil import write_text_atomic

BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"

#: key → (comparison, target); DESIGN §5
GOALS: Dict[str, Tuple[str, float]] = {
    "ne_ratio_vs_seed": ("<=", 0.6),
    "train_peak_fraction": (">=", 0.5),
    "input_overhead": ("<=", 0.05),
    "tta_time_ratio": ("<=", 2.05),
    "preprocess_speedup": (">=", 2.0),
    "preprocess_rss_ratio": ("<=", 1.15),
    "decode_floor_ne": ("<=", 0.003),
}
INFO_KEYS = (
    "ne_ratio_vs_meanshape", "test_ne_demo", "test_ne_seed_cpm", "test_ne_meanshape", "ne_bf16_vs_fp32",
    "train_img_per_s", "bf16_vs_fp32_img_per_s", "model_gflops_per_image", "matmul_gflops_fp32",
    "matmul_gflops_bf16", "inference_img_per_s_plain", "inference_img_per_s_tta", "decode_floor_ne_argmax",
    "input_img_per_s_per_core", "input_img_per_s_all_cores", "input_img_per_s_per_core_host_targets",
    "input_img_per_s_all_cores_host_targets", "keras_img_per_s", "tflite_img_per_s", "onnx_img_per_s",
    "tflite_vs_keras_img_per_s", "onnx_vs_keras_img_per_s",
)


def passes(value: Optional[float], goal: Tuple[str, float]) -> Optional[bool]:
    """Whether `value` meets `goal` = (op, target); None for a missing or non-finite value."""
    if value is None or not np.isfinite(value):
        return None
    op, target = goal
    return bool(value <= target) if op == "<=" else bool(value >= target)


def goal_text(goal: Optional[Tuple[str, float]]) -> str:
    """('<=', 0.6) → '≤ 0.6'; None → '—'."""
    if goal is None:
        return "—"
    return f"{'≤' if goal[0] == '<=' else '≥'} {goal[1]:g}"


def format_value(value) -> str:
    """Compact number for the table: 3 significant digits, thousands unrounded."""
    if value is None:
        return "—"
    if isinstance(value, (int, float, np.floating)) and np.isfinite(value):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def make_entry(key: str, value=None, error: Optional[str] = None, **detail) -> Dict:
    """A results.json entry: value, goal text, pass (None without a goal), error, detail."""
    goal = GOALS.get(key)
    value = None if value is None else float(value)
    return {"value": value, "goal": goal_text(goal) if goal else None,
            "pass": passes(value, goal) if goal and error is None else None,
            "error": error, "detail": detail}


def replace_between_markers(text: str, block: str) -> Optional[str]:
    """`text` with the part between BENCH_START and BENCH_END replaced by `block`; None without markers."""
    start = text.find(BENCH_START)
    end = text.find(BENCH_END, start + len(BENCH_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return text[:start + len(BENCH_START)] + "\n" + block.strip("\n") + "\n" + text[end:]


def heads_table(heads: Dict[str, Dict]) -> str:
    """Markdown NE-per-compute table: one row per registered head (error text when it failed)."""
    lines = ["| Head | Test NE | Train img/s | Inference img/s | GFLOPs/image | Params | Budget |",
             "|---|---|---|---|---|---|---|"]
    for name, h in heads.items():
        if h.get("error"):
            lines.append(f"| `{name}` | error: {str(h['error']).replace('|', '/')[:120]} | | | | | |")
            continue
        lines.append(f"| `{name}` | {format_value(h.get('test_ne'))} | {format_value(h.get('train_img_per_s'))} | "
                     f"{format_value(h.get('inference_img_per_s'))} | {format_value(h.get('gflops_per_image'))} | "
                     f"{format_value(h.get('params'))} | {h.get('budget', '—')} |")
    return "\n".join(lines) + "\n"


def render_table(results: Dict) -> str:
    """Markdown: the run's settings, one row per key (value, goal, pass/fail), then the heads table."""
    meta = results["meta"]
    runtime = meta.get("runtime_s")
    lines = [
        f"Measured {meta['date']} in `{meta['mode']}` mode "
        f"({runtime / 60:.1f} min)." if runtime else f"Measured {meta['date']} in `{meta['mode']}` mode.",
        "",
        "| Setting | Value |",
        "|---|---|",
        f"| Machine | {meta.get('machine') or str(meta['cpu']) + ', ' + str(meta['cores']) + ' core(s)'} |",
        f"| TensorFlow | {meta['tf_version']} (Python {meta['python']}) |",
        f"| Training dtype | {meta.get('dtype') or 'unknown'} |",
        f"| Mode | {meta['mode']} (training budget {meta['budget_s_per_model']:g} s per model) |",
        f"| Date | {meta['date']} |",
        f"| Command | `{meta['command']}` |",
        "",
        "| Key | Value | Goal | Result |",
        "|---|---|---|---|",
    ]
    keys = results["keys"]
    ordered = [k for k in GOALS if k in keys] + [k for k in INFO_KEYS if k in keys] + \
              [k for k in keys if k not in GOALS and k not in INFO_KEYS]
    for key in ordered:
        e = keys[key]
        if e.get("error"):
            value, verdict = "error: " + str(e["error"]).replace("|", "/")[:160], "ERROR"
        else:
            value = format_value(e["value"])
            verdict = "info" if e.get("goal") is None else {True: "pass", False: "FAIL", None: "n/a"}[e.get("pass")]
        lines.append(f"| `{key}` | {value} | {e.get('goal') or '—'} | {verdict} |")
    text = "\n".join(lines) + "\n"
    if results.get("heads"):
        text += ("\nNE per compute: every head of the model registry (`pipeline.models.MODELS`), the demo "
                 "config with `model.name` set to it, trained and measured in this run.\n\n"
                 + heads_table(results["heads"]))
    if results.get("real_heads"):
        first = next(iter(results["real_heads"].values()))
        text += (f"\nReal photos (`make bench REAL={first.get('data', '<dir>')}`): every head with "
                 "`configs/real_cpu.yaml` (one joint model, crop pass), fold 0 trained on the real training "
                 "photos, test NE on the real test split.\n\n" + heads_table(results["real_heads"]))
    return text


DOCS_TEMPLATE = """# Benchmarks

Generated by `make bench` (`pipeline/tools/bench/`); the part between the markers is
rewritten by every run. What each key measures is described in the docstring of
`pipeline/tools/bench/__init__.py`; raw numbers and details are in
`OUTPUT/bench/results.json`.

{start}
{table}{end}
"""


def write_tables(results: Dict, docs: Path, readme: Path) -> None:
    """Replace the bench block of `docs` (whole file from the template without markers) and of `readme`."""
    block = render_table(results)
    text = docs.read_text() if docs.exists() else ""
    new = replace_between_markers(text, block)
    if new is None:
        new = DOCS_TEMPLATE.format(start=BENCH_START, table=block, end=BENCH_END)
    write_text_atomic(docs, new)
    print(f"bench: table written to {docs}")
    if readme is not None and readme.exists():
        new = replace_between_markers(readme.read_text(), block)
        if new is None:
            print(f"bench: {readme} holds no {BENCH_START} … {BENCH_END} markers; left alone")
        else:
            write_text_atomic(readme, new)
            print(f"bench: table written to {readme}")
