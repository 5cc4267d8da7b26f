"""python -m scripts.drift"""

from scripts.drift.cli import main

raise SystemExit(main())
