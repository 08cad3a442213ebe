"""DVC stage `code`: record the source files each stage runs (reports/code/<stage>.json).

The command line is dvc.yaml's; `python stages/code.py --help` lists the options.
"""

import sys
from pathlib import Path

# Import i2i from this checkout, not from wherever it was pip-installed: DVC experiments run
# in copies of the repository (.dvc/tmp/exps/...) whose code may differ from the working tree.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2i.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["code", *sys.argv[1:]], prog_name="stages/code.py")
