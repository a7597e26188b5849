"""``python -m difftraffic_rl`` is the ``difftraffic-rl`` command."""

from difftraffic_rl.cli import main

raise SystemExit(main())
