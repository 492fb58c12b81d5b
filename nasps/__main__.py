import sys

from nasps.cli import main

sys.exit(main())
