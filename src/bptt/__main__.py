"""python -m bptt: the command line (bptt.cli)."""
import sys

from .cli import main

sys.exit(main())
