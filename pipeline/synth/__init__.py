"""`python -m pipeline.synth` (a command contract of DESIGN.md §3): the synthetic dataset lives in
pipeline.tools.synth."""
