"""`python -m mbd.train`: see `mbd.train.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
