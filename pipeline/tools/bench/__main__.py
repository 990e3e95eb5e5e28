"""python -m pipeline.tools.bench --output DIR --mode quick|full (see pipeline/tools/bench/__init__.py)."""
import sys

from pipeline.tools.bench.cli import main

sys.exit(main())
