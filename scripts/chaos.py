"""The fault-injection run: `python scripts/chaos.py [--help]`.

The code is the package scripts/chaos/ (see its __init__.py); this file only makes
the project and that package importable and runs it.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# sys.path[0] is scripts/, where the package lives; the project comes next.
sys.path.insert(1, str(ROOT))

from chaos.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
