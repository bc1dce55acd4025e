import sys

from xvlm_core.cli import main

sys.exit(main())
