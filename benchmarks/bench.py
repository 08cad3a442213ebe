"""The benchmarks as a script: the same as ``i2i bench`` (see ``i2i bench --help``).

python benchmarks/bench.py --setting default --setting cyclegan-128 --steps 10
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2i.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["i2i", "bench", *sys.argv[1:]]  # the command the report records
    main(sys.argv[1:], prog_name="benchmarks/bench.py")
