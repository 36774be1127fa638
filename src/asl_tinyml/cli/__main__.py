"""`python -m asl_tinyml.cli`: the command line."""

import sys

from . import main

sys.exit(main())
