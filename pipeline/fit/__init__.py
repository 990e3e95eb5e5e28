"""Training: the trainer, schedule, resume, fold data."""
