"""The served model's limits and refusals, as functions (the real `mlflow models serve` with
these limits: tests/test_registry.py)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from i2i import serving
from i2i.serving import LIMITS, RequestRefused, decode_request


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def claims_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims another size (its CRC fixed): what a 300 KB file of 9000 x 9000
    pixels looks like to a reader that trusts the header."""
    start = data.index(b"IHDR")
    fields = struct.pack(">II", width, height) + data[start + 12 : start + 17]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + fields))
    return data[:start] + b"IHDR" + fields + crc + data[start + 21 :]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_an_image_over_the_pixel_limit_is_refused_from_its_header_alone():
    huge = claims_size(png(8, 8), 9000, 9000)
    assert Image.open(io.BytesIO(huge)).size == (9000, 9000)
    with pytest.raises(RequestRefused) as e:
        decode_request([b64(png(8, 8)), b64(huge)], LIMITS)
    assert e.value.message == (
        "row 1: 9000x9000 = 81,000,000 pixels, more than the 4,194,304 allowed "
        "(I2I_SERVE_MAX_PIXELS)"
    )


def test_the_default_limits_pass_a_full_request_of_ordinary_images():
    images = decode_request([b64(png(256, 256))] * LIMITS["rows"], LIMITS)
    assert len(images) == 16 and images[0].size == (256, 256)
    with pytest.raises(RequestRefused, match="17 images in one request, more than the 16"):
        decode_request([b64(png(8, 8))] * 17, LIMITS)


def test_the_message_keeps_its_one_line_when_mlflow_rewrites_it():
    error = RequestRefused("row 0: not valid base64")
    error.message = "Failed to predict data '<the whole request>'. \nError: " + error.message
    assert error.message == "row 0: not valid base64"
    assert '"message": "row 0: not valid base64"' in error.serialize_as_json()
    assert error.get_http_status_code() == 400


def test_limits_come_from_the_environment_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("I2I_SERVE_MAX_PIXELS", "100")
    assert serving.limits() == {**LIMITS, "pixels": 100}
    monkeypatch.setenv("I2I_SERVE_MAX_ROWS", "-3")
    with pytest.raises(ValueError, match=r"I2I_SERVE_MAX_ROWS='-3': expected a positive whole"):
        serving.limits()
