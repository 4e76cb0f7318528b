"""``train.py`` for several commands, one after another in one process (tests/test_ddp.py). As a
DDP rank, each command after the first joins the process group the first one set up (Lightning
ends it at exit), so both ranks start once for a ``validate`` and a ``test``."""

import json
import sys

from train import run_cli

if __name__ == "__main__":
    for args in json.loads(sys.argv[1]):
        run_cli(args)
