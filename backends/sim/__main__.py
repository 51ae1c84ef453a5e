import sys

from backends.sim.command import main

sys.exit(main())
