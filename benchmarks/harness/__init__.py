"""The benchmark harness behind ``benchmarks/bench.py``: training settings and modes
(:mod:`.training`), the evaluation protocol's speed (:mod:`.evaluation`) and the reports
(:mod:`.report`)."""
