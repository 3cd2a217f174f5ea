"""`python -m bench --quick | --full`."""

import sys

from bench import main

raise SystemExit(main(sys.argv[1:]))
