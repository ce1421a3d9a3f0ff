import sys

from gluonface.cli import main

sys.exit(main())
