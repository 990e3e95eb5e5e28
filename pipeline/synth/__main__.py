"""`python -m pipeline.synth ...`: see pipeline.synth.cli."""
import sys

from .cli import main

sys.exit(main())
