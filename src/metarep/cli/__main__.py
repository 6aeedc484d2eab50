import sys

from metarep.cli.app import main

sys.exit(main())
