"""`python -m pipeline.submit` (a command contract of DESIGN.md §3): see pipeline.stages.submit."""
import sys

from pipeline.stages.submit import main

if __name__ == "__main__":
    sys.exit(main())
