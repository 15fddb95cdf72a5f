"""``python -m graphopt.cli``."""

from graphopt.cli import main

raise SystemExit(main())
