"""One writer per run and stage: `stage_lock(output, run, stage)` (OUTPUT/runs/<run>/.locks/<stage>.lock).

Two terminals running make on one OUTPUT never write the same artifact at once: the second
predict / ensemble / stack / submit / score / report of a run waits for the first, naming it,
then finds its outputs current and does nothing. Trainings lock their model directory instead
(fit/resume.model_lock: a second trainer of the same model stops at once); preprocess locks its
dataset (a second one waits).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from pipeline.fsutil import file_lock
from pipeline.store.layout import run_dir


@contextlib.contextmanager
def stage_lock(output, run: str, stage: str) -> Iterator[None]:
    """Hold the lock of `stage` for `run` under `output`; wait (with a message) while another holds it."""
    path = run_dir(output, run) / ".locks" / f"{stage}.lock"
    with file_lock(path, message=f"{stage}: waiting for another {stage} of run {run} to finish"):
        yield
