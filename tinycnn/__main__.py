"""`python -m tinycnn ...` runs the command line (see tinycnn/cli.py)."""
import sys

from .cli import main

sys.exit(main())
