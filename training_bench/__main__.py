import sys

from training_bench.cli import main

sys.exit(main())
