import sys

from orbitbench.cli import main

sys.exit(main())
