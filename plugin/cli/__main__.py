"""`python -m plugin.cli ...`: the calico-libnetwork command."""

import sys

from plugin.cli.entry import main

sys.exit(main())
