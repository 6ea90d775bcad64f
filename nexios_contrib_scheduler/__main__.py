"""``python -m nexios_contrib_scheduler``: the ``nexios-scheduler`` command."""

import sys

from .cli import main

sys.exit(main())
