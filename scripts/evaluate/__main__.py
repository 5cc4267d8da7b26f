"""python -m scripts.evaluate"""

from scripts.evaluate.cli import main

raise SystemExit(main())
