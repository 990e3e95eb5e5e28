"""FashionAI keypoint pipeline (stages/, store/, libraries; docs/ and README.md for the map)."""
from pipeline import faults as _faults

_faults.install()
