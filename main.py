"""Start XVLM Chat: `python main.py [--model PATH_OR_REPO] [--vision-tower PATH_OR_REPO] [--device DEVICE]`."""

import sys

from app.main import parse_args, run

if __name__ == "__main__":
    sys.exit(run(parse_args()))
