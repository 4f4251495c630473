"""`python -m ciiv` (and `torchrun ... -m ciiv`) runs the command-line tool."""

import sys

from ciiv.cli import main

sys.exit(main())
