"""python -m scripts.stream"""

from scripts.stream.cli import main

raise SystemExit(main())
