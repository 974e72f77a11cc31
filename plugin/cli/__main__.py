"""`python -m plugin.cli ...`: the calico-libnetwork command."""

import sys

from plugin.cli.main import main

sys.exit(main())
