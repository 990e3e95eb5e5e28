"""docs/configuration.md is generated from the config dataclasses: current, and complete."""
import dataclasses

from pipeline.config import Config
from pipeline.tools import config_doc


def test_reference_is_current():
    """The committed file equals what `make docs` writes (a new key or default makes it stale)."""
    assert config_doc.OUT.read_text() == config_doc.render(), "docs/configuration.md is stale: run `make docs`"


def test_every_key_is_documented_with_a_meaning():
    text = config_doc.render()
    cfg = Config()
    for section in dataclasses.fields(Config):
        value = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        for f in dataclasses.fields(value):
            row = next((line for line in text.splitlines() if line.startswith(f"| `{section.name}.{f.name}` |")), None)
            assert row is not None, f"{section.name}.{f.name} missing from docs/configuration.md"
            meaning = row.split(" | ")[2]
            assert meaning.strip(), f"{section.name}.{f.name} has no comment in pipeline/config.py"


def test_redone_stages_follow_the_recorded_settings():
    """A speed-only key redoes nothing; an input-size change redoes preprocessing onwards."""
    assert config_doc.redone_by("train", "threads").startswith("nothing")
    assert config_doc.redone_by("model", "input_size").startswith("prep")
    assert config_doc.redone_by("predict", "scales").startswith("predict")
    assert config_doc.redone_by("stack", "n_estimators").startswith("stack")
