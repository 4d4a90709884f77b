"""``python -m ecr_multiarch``: the ``ecr-multiarch`` command line."""

import sys

from ecr_multiarch.cli import main

if __name__ == "__main__":
    sys.exit(main())
