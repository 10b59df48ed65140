"""`python -m request_queue`: serve until SIGTERM, then drain (app.py)."""

import sys

from request_queue.app import main

sys.exit(main())
