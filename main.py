"""Start XVLM Chat: `python main.py [IMAGE ...] [--model PATH_OR_REPO] [--vision-tower PATH] [--device DEVICE]`."""

import sys

from app.main import parse_args, run

if __name__ == "__main__":
    sys.exit(run(parse_args()))
