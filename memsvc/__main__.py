"""`python -m memsvc` is the `memsvc` command."""

import sys

from memsvc.cli import main

sys.exit(main())
