"""Downloads over real HTTP on 127.0.0.1: normal, resumed, corrupt, missing, offline; weights."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from i2i import backbones, weights
from i2i.config import params_from_dict
from i2i.data.fetch import DownloadError, fetch
from tests.conftest import default_params

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # several chunks, not a multiple of the chunk size


def serve(server, name: str = "blob.bin", data: bytes = PAYLOAD) -> str:
    (server.root / name).write_bytes(data)
    return server.url + name


def test_download_streams_the_file_and_second_call_is_a_no_op(server, tmp_path: Path):
    url = serve(server)
    dest = tmp_path / "out" / "blob.bin"
    assert fetch(url, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest()) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("blob.bin.part").exists()
    fetch(url, dest)
    assert len(server.log) == 1


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path: Path):
    url = serve(server)
    server.cut["/blob.bin"] = [1_000_000]
    dest = fetch(url, tmp_path / "blob.bin")
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.log] == [None, "bytes=1000000-"]
    assert server.sent("/blob.bin") == len(PAYLOAD)  # nothing fetched twice


def test_part_file_left_by_a_killed_process_is_resumed(server, tmp_path: Path):
    url = serve(server)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:777_777])
    fetch(url, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest()[:8])
    assert dest.read_bytes() == PAYLOAD
    assert server.log[0]["range"] == "bytes=777777-"
    assert server.sent("/blob.bin") == len(PAYLOAD) - 777_777


def test_server_without_range_support_restarts_from_zero(server, tmp_path: Path):
    url = serve(server)
    server.ranges = False
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"stale bytes from another file")
    fetch(url, dest)
    assert dest.read_bytes() == PAYLOAD


def test_stale_part_longer_than_the_file_is_discarded(server, tmp_path: Path):
    url = serve(server, data=b"short")
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 100)
    fetch(url, dest)
    assert dest.read_bytes() == b"short"


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path: Path):
    url = serve(server)
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="SHA-256 mismatch") as e:
        fetch(url, dest, sha256="deadbeef")
    assert url in str(e.value) and "deadbeef" in str(e.value)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_repeated_drops_keep_the_part_file_for_the_next_run(server, tmp_path: Path):
    url = serve(server)
    server.cut["/blob.bin"] = [100_000] * 3
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="partial file") as e:
        fetch(url, dest, retries=2)
    assert "next run resumes" in str(e.value)
    assert dest.with_name("blob.bin.part").stat().st_size == 300_000
    fetch(url, dest)
    assert dest.read_bytes() == PAYLOAD


def test_http_error_names_the_url_and_where_to_put_the_file(server, tmp_path: Path):
    dest = tmp_path / "gone.zip"
    with pytest.raises(DownloadError) as e:
        fetch(server.url + "gone.zip", dest)
    msg = str(e.value)
    assert "HTTP 404" in msg and server.url + "gone.zip" in msg and str(dest.resolve()) in msg


def test_no_network_error_names_the_url_and_where_to_put_the_file(tmp_path: Path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/horse2zebra.zip"
    dest = tmp_path / "horse2zebra.zip"
    with pytest.raises(DownloadError) as e:
        fetch(url, dest)
    assert f"cannot reach {url}" in str(e.value) and f"place it at {dest.resolve()}" in str(e.value)


def test_weights_are_fetched_into_torchvision_cache_and_checked(
    server, monkeypatch, tmp_path: Path
):
    data = b"pretend these are VGG16 weights"
    prefix = hashlib.sha256(data).hexdigest()[:8]
    fake = weights.WeightFile("vgg16", f"vgg16-{prefix}.pth", prefix)
    monkeypatch.setitem(weights.WEIGHTS, "vgg16", fake)
    serve(server, fake.filename, data)
    with pytest.raises(weights.MissingWeightsError, match="i2i weights vgg16"):
        weights.path("vgg16")
    got = weights.ensure(["vgg16"], mirror=server.url)["vgg16"]
    assert got == tmp_path / "torch-home" / "hub" / "checkpoints" / fake.filename
    assert got.read_bytes() == data and weights.path("vgg16") == got


def test_weights_with_a_wrong_hash_are_refused(server, monkeypatch):
    fake = weights.WeightFile("alexnet", "alexnet-00000000.pth", "00000000")
    monkeypatch.setitem(weights.WEIGHTS, "alexnet", fake)
    serve(server, fake.filename, b"tampered")
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        weights.ensure(["alexnet"], mirror=server.url)


def test_only_the_weights_the_params_need_are_required():
    p = default_params()
    assert backbones.required(params_from_dict(p)) == ["alexnet", "inception_fid"]  # LPIPS; FID/KID
    p["evaluate"]["metrics"] = ["lpips_diversity", "inception_score", "cis"]
    assert backbones.required(params_from_dict(p)) == [
        "alexnet"
    ]  # IS/CIS use the domain classifier
    p["evaluate"]["metrics"] = ["content_iou", "mode_coverage"]
    assert backbones.required(params_from_dict(p)) == []
    p["loss"]["vgg_w"] = 1.0
    assert backbones.required(params_from_dict(p)) == ["vgg16"]
    p["evaluate"].update(
        metrics=["lpips_diversity", "cis"], classifier="inception", lpips_net="vgg"
    )
    assert backbones.required(params_from_dict(p)) == ["vgg16", "inception_fid"]
    assert backbones.for_training(params_from_dict(p).loss) == ["vgg16"]
    assert backbones.for_real_features(params_from_dict(p).evaluate) == ["inception_fid"]
    p["evaluate"]["inception"] = "torchvision"
    assert backbones.required(params_from_dict(p)) == ["vgg16", "inception_v3"]
