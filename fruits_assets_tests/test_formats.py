"""Decoding by content: every photo format a phone or camera writes, and a named reason for everything else."""

import io

import numpy as np
import pytest
from PIL import Image

from fruits_assets.vision.formats import unsupported_kind
from fruits_assets.vision.preprocess import decode_resized, rejection_of

from .formats import PHOTO_FORMATS, STRAYS, animated_gif, as_png, photo, stray


@pytest.mark.parametrize("extension", sorted(PHOTO_FORMATS))
def test_every_photo_format_decodes_to_the_pixels_of_the_same_image_saved_as_png(extension):
    content = photo(extension, (220, 60, 40), seed=1)
    assert rejection_of(content) is None
    np.testing.assert_array_equal(decode_resized(content), decode_resized(as_png(content)))


def test_an_animated_gif_is_featurized_from_its_first_frame():
    content = animated_gif((220, 60, 40))
    assert Image.open(io.BytesIO(content)).n_frames == 2
    np.testing.assert_array_equal(decode_resized(content), decode_resized(as_png(content)))


@pytest.mark.parametrize("name", sorted(STRAYS))
def test_what_is_not_a_photo_is_rejected_with_a_stable_reason(name):
    _, reason = STRAYS[name]
    rejection = rejection_of(stray(name))
    assert rejection is not None and rejection.reason == reason and rejection.message


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\0\0\0\x18ftypmp42", "MP4 or other ISO media (mp42)"),
        (b"\0\0\0\x14ftypqt  ", "QuickTime video"),
        (b"\0\0\0\x1cftypheic", None),  # a HEIC photo: the HEIF decoder's to open
        (b"\0\0\0 ftypavif", None),
        (b"RIFF\0\0\0\0AVI LIST", "AVI video"),
        (b"%PDF-1.7", "PDF document"),
        (b"8BPS\0\1", "Photoshop document (PSD)"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 image"),
        (b"  <?xml version='1.0'?><svg xmlns=''/>", "SVG vector image"),
        (b"hello", None),
    ],
)
def test_known_kinds_are_named_from_their_signature(head, kind):
    assert unsupported_kind(head) == kind


def test_a_jpeg_2000_file_is_refused_by_name_though_pillow_could_open_it():
    from .formats import encoded, fruit

    rejection = rejection_of(encoded(fruit((1, 2, 3), 0), "JPEG2000"))
    assert rejection is not None and rejection.reason == "unsupported_format" and "JPEG 2000" in rejection.message
