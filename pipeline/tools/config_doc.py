"""docs/configuration.md, generated from the config dataclasses (`make docs`).

Every key of pipeline/config.py's sections, with its default (the one source of defaults), the
comment beside its field (its meaning) and the stages whose outputs a change of it redoes
(`STAGE_SETTINGS` and the stages downstream of them; settings that only change speed redo
nothing). tests/unit/tools/test_config_doc.py fails when the file is stale or a key is missing.

    python -m pipeline.tools.config_doc [--check] [--out docs/configuration.md]
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tokenize
from pathlib import Path
from typing import Dict, List, Tuple

from pipeline import config as config_module
from pipeline.config import NEUTRAL, STAGE_SETTINGS, UNRECORDED, Config

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "configuration.md"
#: the stage chain: a stage's outputs are read by the stages after it
ORDER = ("prep", "train", "predict", "ensemble", "stack", "submit", "score")


def field_comments() -> Dict[Tuple[str, str], str]:
    """{(section, key): the comment on the field's line} read from pipeline/config.py's source."""
    source = Path(config_module.__file__).read_text()
    out: Dict[Tuple[str, str], str] = {}
    section, pending = None, {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            pending[tok.start[0]] = tok.string.lstrip("#").strip()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("SECTION: ClassVar[str] ="):
            section = stripped.split("=", 1)[1].strip().strip('"')
        elif line.startswith("class "):
            section = None
        elif section and line.startswith("    ") and ":" in stripped and not stripped.startswith(("#", "def ", "@")):
            key = stripped.split(":", 1)[0].strip()
            if key.isidentifier() and number in pending:
                out[(section, key)] = pending[number]
    return out


def redone_by(section: str, key: str) -> str:
    """The stages a change of section.key redoes: the first stage recording it and all after it."""
    first = None
    for stage in ORDER:
        keys = STAGE_SETTINGS.get(stage, {}).get(section)
        skipped = UNRECORDED.get(stage, {}).get(section, ())
        if keys is not None and (keys == "*" or key in keys) and key not in skipped:
            first = stage
            break
    if section == "crop":
        first = "prep" if key == "source_size" else "train"
    if section == "data" and key == "categories":
        first = "train"  # a joint model's images; per-category runs: which models exist
    if first is None:
        return "nothing (speed or placement only)"
    return " → ".join(ORDER[ORDER.index(first):])


def rows() -> List[Tuple[str, str, str, str]]:
    comments = field_comments()
    out = []
    for section_field in dataclasses.fields(Config):
        if not dataclasses.is_dataclass(section_field.type) and section_field.name in ("name", "categories"):
            continue
        section = getattr(Config(), section_field.name)
        if not dataclasses.is_dataclass(section):
            continue
        for f in dataclasses.fields(section):
            default = getattr(section, f.name)
            shown = list(default) if isinstance(default, tuple) else default
            text = "null" if shown is None else repr(shown).replace("'", "") if isinstance(shown, list) else \
                str(shown).lower() if isinstance(shown, bool) else f'"{shown}"' if shown == "" else str(shown)
            meaning = comments.get((section_field.name, f.name), "")
            if (section_field.name, f.name) in NEUTRAL:
                meaning += " (its default leaves earlier results current)"
            out.append((f"{section_field.name}.{f.name}", f"`{text}`", meaning.replace("|", "\\|"),
                        redone_by(section_field.name, f.name)))
    return out


def render() -> str:
    head = [
        "# Configuration reference",
        "",
        "Generated from the config dataclasses of `pipeline/config.py` by `make docs`; do not edit by hand.",
        "A config file (YAML) names its parent with `base:` and overrides any of these keys; `SET='a.b=1 c.d=[1, 2]'`",
        "overrides them on the command line. Unknown keys and wrong types are refused with the file and key.",
        "A `categories:` block in a config (`categories: {dress: {model: {width: 96}}}`) overrides keys for one",
        "category's models.",
        "",
        "\"Redoes\" names the stages whose outputs a change of the key makes stale: `make` reruns exactly those",
        "(each stage records the settings it read). Keys that redo nothing only change speed or placement.",
        "",
    ]
    body, section = [], None
    for key, default, meaning, redo in rows():
        sec = key.split(".")[0]
        if sec != section:
            section = sec
            body += ["", f"## `{sec}`", "", "| key | default | meaning | redoes |", "|---|---|---|---|"]
        body.append(f"| `{key}` | {default} | {meaning} | {redo} |")
    return "\n".join(head + body) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 when the file differs from what would be written")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    from pipeline.fsutil import write_text_atomic

    write_text_atomic(args.out, text)
    print(f"config_doc: {args.out} ({len(rows())} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
