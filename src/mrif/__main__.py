"""``python -m mrif``: the same command line as ``mrif`` (and what ``torchrun -m mrif`` runs)."""

import sys

from mrif.cli import main

if __name__ == "__main__":
    sys.exit(main())
