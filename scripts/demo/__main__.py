"""python -m scripts.demo"""

from scripts.demo.cli import main

raise SystemExit(main())
