"""``python -m quantfake``: the same entry point as the ``quantfake`` command (for an environment without scripts)."""

from quantfake.cli import main

raise SystemExit(main())
