"""`python -m pipeline.synth ...`: see pipeline.tools.synth.cli."""
import sys

from pipeline.tools.synth.cli import main

sys.exit(main())
