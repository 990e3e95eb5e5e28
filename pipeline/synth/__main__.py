import sys

from pipeline.tools.synth.cli import main

sys.exit(main())
