"""``python -m certd``: the same as the ``certd`` command."""

import sys

from certd.cli import main

if __name__ == "__main__":
    sys.exit(main())
