import pytest

from fruits_assets.vision.paths import is_within, label_and_split, path_parts


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("file:/data/fruits/Test/Apple Golden 1/r_1_100.jpg", "/data/fruits", ("Apple Golden 1", "Test")),
        ("file:/data/fruits/Apple Golden 1/r_1_100.jpg", "/data/fruits", ("Apple Golden 1", None)),
        ("file:/data/fruits/a.jpg", "/data/fruits", (None, None)),
        ("s3a://bucket/imgs/Training/Kiwi 1/1.jpg", "s3://bucket/imgs", ("Kiwi 1", "Training")),
        ("file:/data/fruits/deep/er/Test/Pêche 2/x.png", "/data/fruits", ("Pêche 2", "Test")),
        ("file:/data/fruits/Test/100%25 kiwi/x.jpg", "/data/fruits/", ("100%25 kiwi", "Test")),
    ],
)
def test_label_and_split(path, root, expected):
    assert label_and_split(path, root) == expected


def test_path_parts_drop_scheme_only():
    assert path_parts("file:/a/b c/d.jpg") == ["a", "b c", "d.jpg"]
    assert path_parts("s3a://bucket/k/x.jpg") == ["bucket", "k", "x.jpg"]
    assert path_parts("/a/b#c?d.jpg") == ["a", "b#c?d.jpg"]


def test_within_compares_whole_segments_and_never_mixes_local_and_s3():
    assert is_within("/data/fruits/out", "/data/fruits") and is_within("/data/fruits", "/data/fruits")
    assert not is_within("/data/fruits-out", "/data/fruits")
    assert is_within("s3a://b/p/x", "s3://b/p") and not is_within("/b/p/x", "s3://b/p")
