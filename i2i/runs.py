"""Runs read back from the MLflow store (``i2i compare``, ``i2i register``), and the Model
Registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from i2i.config import TrackingConfig
from i2i.tracking import repository_root, retry, tracking_uri


@dataclass(frozen=True)
class RunRecord:
    """One run, read back for comparison."""

    run_id: str
    name: str
    status: str
    start_time: int  # ms since the epoch
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each
    tags: dict[str, str]


def find_runs(
    cfg: TrackingConfig,
    experiment: str | None = None,
    tags: dict[str, str] | None = None,
    run_ids: list[str] | None = None,
    root: Path | None = None,
) -> list[RunRecord]:
    """Runs of ``experiment`` (default ``cfg.experiment``) carrying every tag in ``tags``, or the
    given ``run_ids``; oldest first. Unknown experiments and run ids, a missing store and one
    that cannot be read are errors naming them; nothing is written to the store."""
    from i2i.errors import I2IError

    uri = tracking_uri(cfg, root or repository_root())
    if uri.startswith("sqlite:///"):
        store = Path(uri[len("sqlite:///") :].split("?")[0])
        if not store.is_file():
            raise I2IError(
                f"no MLflow store at {store}: nothing has been tracked there yet (run "
                f"`dvc repro` or `i2i train` first), or set tracking.uri"
            )
    try:
        return _find_runs(uri, cfg, experiment, tags, run_ids)
    except I2IError:
        raise
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's and MLflow's many kinds
        first = (str(e).strip().splitlines() or [""])[0][:200]
        if "database is locked" in str(e):
            raise I2IError(
                f"the MLflow store {uri} stayed locked by another process (one holding "
                f"a long write); try again when it is done"
            ) from None
        raise I2IError(
            f"cannot read the MLflow store {uri} ({type(e).__name__}: {first}); if the "
            f"file is damaged, move it aside (the next run starts a new one)"
        ) from None


def _find_runs(
    uri: str,
    cfg: TrackingConfig,
    experiment: str | None,
    tags: dict[str, str] | None,
    run_ids: list[str] | None,
) -> list[RunRecord]:
    from mlflow.tracking import MlflowClient

    from i2i.errors import I2IError

    client = MlflowClient(tracking_uri=uri)
    if run_ids:
        runs = []
        for rid in run_ids:
            try:
                runs.append(retry(client.get_run, rid))
            except Exception as e:
                raise I2IError(f"run {rid!r} not found in {uri} ({type(e).__name__})") from None
    else:
        name = experiment or cfg.experiment
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = [e.name for e in client.search_experiments()]
            raise I2IError(
                f"experiment {name!r} not found in {uri}; it has: {', '.join(known) or 'none'}"
            )
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items())
        runs = retry(
            client.search_runs, [exp.experiment_id], filter_string=query, max_results=50000
        )
    records = [
        RunRecord(
            r.info.run_id,
            r.data.tags.get("dvc_exp_name") or r.info.run_name or r.info.run_id[:8],
            r.info.status,
            r.info.start_time,
            dict(r.data.params),
            dict(r.data.metrics),
            dict(r.data.tags),
        )
        for r in runs
    ]
    return sorted(records, key=lambda r: r.start_time)


def register(cfg: TrackingConfig, run: RunRecord, name: str, alias: str | None) -> int:
    """Register ``run``'s MLflow model (``runs:/<id>/model``) as a version of ``name`` in the
    project's Model Registry (one version per run: registering a run again reuses its version),
    point ``alias`` at it; return the version."""
    from mlflow.tracking import MlflowClient

    from i2i.errors import I2IError

    client = MlflowClient(tracking_uri=tracking_uri(cfg, repository_root()))
    if not any(a.path == "model/MLmodel" for a in client.list_artifacts(run.run_id, "model")):
        raise I2IError(
            f"run {run.name} ({run.run_id}) has no MLflow model: it was trained before the train "
            f"stage logged one, or did not finish"
        )
    if not client.search_registered_models(f"name = '{name}'"):
        retry(client.create_registered_model, name)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run.run_id}'")
    if versions:
        version = int(versions[0].version)
    else:
        source = f"runs:/{run.run_id}/model"
        created = retry(client.create_model_version, name, source, run_id=run.run_id)
        version = int(created.version)
    if alias:
        retry(client.set_registered_model_alias, name, alias, str(version))
    return version
