"""The throughput benchmark: `python bench/run.py [--quick] [--help]`.

The code is the package bench/ (see its __init__.py); this file only puts the
project first on the import path and runs it.
"""

import sys
from pathlib import Path

# Run as a script, sys.path[0] is bench/ itself: the project's root takes its place,
# so the package's modules are imported as bench.* and shadow nothing.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
