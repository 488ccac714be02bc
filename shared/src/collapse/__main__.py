import sys

from collapse.cli import main

sys.exit(main())
