"""``python -m csembed`` runs the command line."""

import sys

from csembed.cli import main

sys.exit(main())
