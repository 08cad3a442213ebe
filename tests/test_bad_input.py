"""Bad input through the command line: one clear line naming the file, key or value and what
would be accepted, exit code 1, no traceback, and nothing already written lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import save_image, solid, write_params
from tests.train_helpers import tiny_train_params

BIN = Path(sys.executable).parent


def i2i(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "i2i"), *args], cwd=cwd, capture_output=True, text=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_an_empty_params_file_names_the_sections_it_needs(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("")
    line = _one_line_error(i2i(tmp_path, "params"))
    assert "params.yaml: the file is empty" in line and "data, model, loss, train" in line


def test_a_data_path_that_is_a_file_is_named_as_such(tmp_path: Path):
    p = tiny_train_params()
    p["data"].update(dataset="folder", path=str(tmp_path / "photos.zip"))
    (tmp_path / "photos.zip").write_bytes(b"PK")
    write_params(tmp_path / "params.yaml", p)
    line = _one_line_error(i2i(tmp_path, "download", "--out", "raw"))
    assert str(tmp_path / "photos.zip") in line and "a file, not a folder" in line
    assert "trainA/ trainB/ testA/ testB/" in line and not (tmp_path / "raw").exists()


def test_fewer_images_than_a_batch_names_the_batch_size_and_writes_no_checkpoint(tmp_path: Path):
    data = tmp_path / "tiny"
    for part in ("trainA", "trainB", "testA", "testB"):
        save_image(data / part / "x.png", solid(40, 40, 100))
    save_image(data / "trainA" / "pixel.png", np.full((1, 1, 3), 7, np.uint8))  # 1 x 1: skipped
    p = tiny_train_params()
    p["data"].update(dataset="folder", path=str(data))
    p["train"]["batch_size"] = 4
    write_params(tmp_path / "params.yaml", p)
    assert i2i(tmp_path, "download").returncode == 0
    pre = i2i(tmp_path, "preprocess")
    assert pre.returncode == 0 and "1 skipped" in pre.stdout
    line = _one_line_error(i2i(tmp_path, "train"))
    assert "data/prepared: 1 training image(s)" in line and "train.batch_size = 4" in line
    assert not list(tmp_path.glob("checkpoints/*/ckpt-*.pt"))


def test_compare_without_a_store_or_with_a_damaged_one_says_so_and_writes_nothing(tmp_path: Path):
    (tmp_path / ".git").mkdir()  # the repository root, where the store would be
    write_params(tmp_path / "params.yaml", tiny_train_params())
    line = _one_line_error(i2i(tmp_path, "compare"))
    assert "no MLflow store at" in line and "mlflow.db" in line
    assert not (tmp_path / "mlflow.db").exists()  # reading never creates one
    damaged = b"SQLite format 3\0" + bytes(range(256)) * 8
    (tmp_path / "mlflow.db").write_bytes(damaged)
    line = _one_line_error(i2i(tmp_path, "compare"))
    assert "cannot read the MLflow store" in line and "move it aside" in line
    assert (tmp_path / "mlflow.db").read_bytes() == damaged
    assert not (tmp_path / "reports").exists()  # no half-written table or chart


def test_compare_on_a_store_another_process_keeps_locked_says_so(tmp_path: Path):
    import sqlite3

    from mlflow.tracking import MlflowClient

    (tmp_path / ".git").mkdir()
    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").create_experiment("i2i")
    p = tiny_train_params()
    p["tracking"]["uri"] = f"sqlite:///{store}?timeout=1"  # wait 1 s for the lock, not 60
    write_params(tmp_path / "params.yaml", p)
    before = store.read_bytes()
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a writer in the middle of a long transaction
    try:
        line = _one_line_error(i2i(tmp_path, "compare"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "stayed locked by another process" in line and str(store) in line
    assert store.read_bytes() == before and not (tmp_path / "reports").exists()
