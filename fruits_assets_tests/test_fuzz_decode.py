"""Arbitrary and damaged bytes through the decode path: no crash, no hang, featurizable or rejected."""

import faulthandler
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fruits_assets.vision.preprocess import decode_resized, rejection_of
from fruits_assets.vision.reasons import Reason

from .conftest import fruit_jpeg

SEEDS = [fruit_jpeg((200, 40, 30), fmt=fmt, size=48) for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")]
WATCHDOG_SECONDS = 240  # a decoder stuck in C cannot be interrupted: the watchdog ends the process instead


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A real image in one of the accepted formats, then truncated, overwritten or spliced at random."""
    content = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
        at = draw(st.integers(0, len(content)))
        if kind == "truncate":
            del content[at:]
        elif kind == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=16))
            content[at : at + len(patch)] = patch
        else:
            content[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(content)


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def assert_featurizable_or_rejected(content: bytes) -> None:
    rejection = rejection_of(content)
    if rejection is None:
        pixels = decode_resized(content)
        assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    else:
        assert rejection.reason in set(Reason) and rejection.message


FUZZ = settings(
    max_examples=5_000, deadline=timedelta(seconds=10), database=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(content):
    assert_featurizable_or_rejected(content)


@FUZZ
@given(damaged_images())
def test_damaged_images(content):
    assert_featurizable_or_rejected(content)
