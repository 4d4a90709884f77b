"""``python -m manifest_stitcher``: the ``ecr-multiarch`` command line."""

import sys

from manifest_stitcher.cli import main

if __name__ == "__main__":
    sys.exit(main())
