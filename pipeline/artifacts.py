"""What made an artifact, and whether it is still current.

Every stage output is accompanied by a *record*: a small JSON file holding the
`inputs` it was built from — the resolved settings the stage depends on
(`Config.stage_settings`) and the identities of its upstream artifacts (content
hashes, or the keys of keyed prep artifacts). A stage redoes its work exactly
when the inputs it would record now differ from the recorded ones; file times
alone never decide. When the inputs are unchanged the stage leaves its outputs
alone (it only refreshes the record's modification time, so that make's
file-time view agrees and the next `make` runs nothing).

The make side (`python -m pipeline.artifacts stamps ...`, run while make reads
the Makefile) writes one *stamp* per stage under `runs/<run>/.stamps/`: the
stage's resolved settings, rewritten only when they change. Make targets
depend on those stamps, so an edit of the config file, of a file it inherits
from, or of `SET=` reaches exactly the stages it concerns.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from .fsutil import write_text_atomic

RECORD_VERSION = 1


def file_id(path) -> str:
    """Content identity of a file: sha1 of its bytes (first 16 hex digits)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def files_id(paths: Iterable) -> Dict[str, str]:
    """{path name: file_id} of several files (missing files raise FileNotFoundError naming them)."""
    out = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"missing {p}")
        out[str(p)] = file_id(p)
    return out


def digest(obj: Any) -> str:
    """Short hash of a JSON-able object (sorted keys)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def canonical(obj: Any) -> Any:
    """obj as it reads back from JSON (tuples → lists), so recorded and fresh inputs compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def read_record(path) -> Optional[Dict]:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged record is simply not current


def is_current(record_path, inputs: Dict, outputs: Iterable = ()) -> bool:
    """True when `record_path` records exactly `inputs` and every file in `outputs` exists.

    When current, the record's mtime is refreshed (content untouched) so that
    make, which compares times, sees the target as up to date too.
    """
    record = read_record(record_path)
    if record is None or record.get("inputs") != canonical(inputs):
        return False
    if not all(Path(p).exists() for p in outputs):
        return False
    os.utime(record_path)
    return True


def write_record(path, inputs: Dict, **extra) -> Dict:
    """Write a record (atomically) holding `inputs` plus any extra fields (results, notes)."""
    record = {"version": RECORD_VERSION, "inputs": canonical(inputs), **canonical(extra)}
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True))
    return record


def write_if_changed(path, text: str) -> bool:
    """Write `text` to `path` atomically unless the file already holds exactly that; True if written."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    write_text_atomic(path, text)
    return True


# --------------------------------------------------------------------------- make stamps


def stamps_dir(output, run: str) -> Path:
    return Path(output) / "runs" / run / ".stamps"


def write_stamps(output, run: str, cfg, input_dir=None) -> Dict[str, bool]:
    """One JSON stamp per stage of `run` (its resolved settings); rewritten only when changed.

    The prep stamp also holds the input directory and its fingerprint, so new or
    changed input files reach `make preprocess`. Returns {stage: rewritten}.
    """
    from .config import STAGE_SETTINGS

    directory = stamps_dir(output, run)
    changed = {}
    for stage in STAGE_SETTINGS:
        settings = stage_stamp_settings(cfg, stage)
        if stage == "prep" and input_dir is not None:
            from .preprocess import input_fingerprint

            settings = {**settings, "input": str(Path(input_dir).resolve()),
                        "fingerprint": input_fingerprint(input_dir)}
        changed[stage] = write_if_changed(directory / f"{stage}.json",
                                          json.dumps(canonical(settings), indent=2, sort_keys=True) + "\n")
    from .joint import model_names

    for cat in model_names(cfg):  # one train stamp per category (or the joint model): its models' alone
        changed[f"train-{cat}"] = write_if_changed(
            directory / f"train-{cat}.json",
            json.dumps(canonical(cfg.for_category(cat).stage_settings("train")), indent=2, sort_keys=True) + "\n")
    return changed


#: run-level stages whose settings may differ per category (config `categories:` overrides); train
#: has a stamp per category instead (train-<cat>.json), its run-level stamp the base settings only
PER_CATEGORY_STAGES = ("predict",)


def stage_stamp_settings(cfg, stage: str) -> Dict:
    """A run-level stage's settings; for predict also every overridden category's own."""
    settings = cfg.stage_settings(stage)
    if stage in PER_CATEGORY_STAGES and cfg.categories:
        own = {cat: cfg.for_category(cat).stage_settings(stage) for cat in cfg.data.categories
               if cat in cfg.categories}
        own = {cat: s for cat, s in own.items() if s != settings}  # only categories that differ
        if own:
            settings = {**settings, "categories": own}
    return settings


def make_vars(cfg, run: str) -> str:
    """Makefile fragment with what the targets need to know about a config (one `VAR := value` a line)."""
    from .baseline import baseline_name
    from .joint import model_names

    ens, members = cfg.ensemble_target(run)
    lines = {
        "CATS": " ".join(cfg.data.categories),
        "MODEL_NAMES": " ".join(model_names(cfg)),
        "FOLD_IDS": " ".join(str(f) for f in range(cfg.data.folds)),
        "ENS": ens,
        "MEMBERS": " ".join(members),
        "BASE_RUN": baseline_name(cfg),
        "FALLBACK": cfg.submit.fallback or baseline_name(cfg),
        "PARTIAL": "" if set(cfg.data.categories) >= set(_all_categories()) else "1",
    }
    return "".join(f"{k} := {v}\n" for k, v in lines.items())


def _all_categories():
    from .keypoints import CATEGORIES

    return CATEGORIES


def main(argv=None) -> int:
    """`stamps`: write the stage stamps and vars.mk of a run (called by make while it reads the Makefile)."""
    import argparse

    from .config import add_config_args, load_config

    parser = argparse.ArgumentParser(description="Per-stage settings stamps for make.")
    parser.add_argument("command", choices=["stamps"])
    parser.add_argument("--output", default="output")
    parser.add_argument("--input", default=None)
    parser.add_argument("--run", default=None)
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    run = args.run or cfg.name
    write_stamps(args.output, run, cfg, args.input)
    write_if_changed(stamps_dir(args.output, run) / "vars.mk", make_vars(cfg, run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
