import sys

from dpengine.cli import main

sys.exit(main())
