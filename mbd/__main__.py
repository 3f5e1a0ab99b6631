"""`python -m mbd`: the `mbd` command."""

import sys

from .cli import main

sys.exit(main())
