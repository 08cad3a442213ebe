"""Which runs are repetitions of one setting: the *configuration id*.

Two runs share a configuration when their params differ only in the seed of training or in
keys that say where and how fast they ran (:data:`RUN_ONLY_KEYS`). The id is a hash of the
remaining flattened params, each value as its ``str`` (the form MLflow stores), so it is the same
whether computed from ``params.yaml`` at training time or from a run's logged params afterwards.
``i2i compare`` groups runs by it, and the train stage records it in MLflow (tag ``config_id``),
in ``reports/train/metrics.json`` (so ``dvc exp show`` lists it) and in ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

# What makes one run of a configuration differ from another: its seeds axis.
SEED_KEYS = ("train.seed",)

# Keys that say where a run ran, how fast, or where it reported, not what it computed: devices,
# worker processes, batch sizes of the sample and evaluate stages, checkpoint and logging
# cadence, download hosts, the tracking store and the SLURM jobs of a sweep. The one list of
# them; the checkpoint fingerprint leaves them out too.
RUN_ONLY_KEYS = (
    "data.num_workers",
    "data.mirror",
    "train.device",
    "train.compile",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.sample_every",
    "train.num_samples",
    "sample.batch_size",
    "sample.device",
    "evaluate.batch_size",
    "evaluate.device",
    "backbones.mirror",
    "backbones.timeout",
    "tracking.uri",
    "tracking.experiment",
    "cluster.root",
    "cluster.remote",
    "cluster.partition",
    "cluster.account",
    "cluster.time",
    "cluster.gres",
    "cluster.cpus_per_task",
    "cluster.mem",
    "cluster.signal_before",
    "cluster.sbatch",
    "cluster.setup",
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            flat |= flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def defining(flat_params: Mapping[str, Any]) -> dict[str, str]:
    """The params that define the configuration, as strings: all but the seed and the run-only
    keys."""
    skip = set(SEED_KEYS) | set(RUN_ONLY_KEYS)
    return {k: str(v) for k, v in sorted(flat_params.items()) if k not in skip}


def configuration_id(flat_params: Mapping[str, Any]) -> str:
    """12 hex digits naming the configuration of flattened params (``params.yaml`` flattened,
    or a run's MLflow params)."""
    blob = json.dumps(defining(flat_params), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
