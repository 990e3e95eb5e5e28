"""`python -m pipeline.metrics` (a command contract of DESIGN.md §3): see pipeline.scoring.metrics."""
import sys

from pipeline.scoring.metrics import main

if __name__ == "__main__":
    sys.exit(main())
