"""DVC stage `real_features`: Inception features of the real test images, shared by every
experiment's evaluation.

The command line is dvc.yaml's; `python stages/real_features.py --help` lists the options.
"""

import sys
from pathlib import Path

# Import i2i from this checkout, not from wherever it was pip-installed: DVC experiments run
# in copies of the repository (.dvc/tmp/exps/...) whose code may differ from the working tree.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2i.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["real-features", *sys.argv[1:]], prog_name="stages/real_features.py")
