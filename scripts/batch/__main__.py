"""python -m scripts.batch"""

from scripts.batch.cli import main

raise SystemExit(main())
