"""`python -m tools.e2e`: the command line of tools/e2e/report.py."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/e2e`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.e2e.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
