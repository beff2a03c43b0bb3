import sys

from fyntr.cli import main

sys.exit(main())
