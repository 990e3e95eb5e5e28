"""python -m pipeline.bench --output DIR --mode quick|full (see pipeline/bench/__init__.py)."""
import sys

from .harness import main

sys.exit(main())
