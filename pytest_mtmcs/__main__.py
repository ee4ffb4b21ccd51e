import sys

from pytest_mtmcs.cli import main

sys.exit(main())
