"""Labels from folders and a full decode of each image, in one pandas UDF: what can be featurized, and why not."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from fruits_assets.vision.paths import label_and_split
from fruits_assets.vision.preprocess import rejection_of
from fruits_assets.vision.reasons import Reason

_SCREENING = StructType([StructField(name, StringType()) for name in ("label", "split", "reason", "message")])
_NO_LABEL = "a file directly under the images root has no label folder"


def screen(path: str, content: bytes, root: str, max_pixels: int) -> tuple[str | None, ...]:
    """`label, split, reason, message` of one image: reason and message are null for an image to featurize."""
    label, split = label_and_split(path, root)
    if label is None:
        return label, split, Reason.UNLABELED.value, _NO_LABEL
    rejected = rejection_of(content, max_pixels)
    return (label, split, rejected.reason.value, rejected.message) if rejected else (label, split, None, None)


def with_screening(images: DataFrame, root: str, max_pixels: int) -> DataFrame:
    """Add `label` (parent folder, verbatim), `split` (grandparent below the root, or null), `reason` and `message`.

    One Python pass labels and decodes each image in full to know whether it can
    be featurized (cheap next to the model): a single UDF keeps one Python worker
    per task.
    """

    def screen_batches(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        for paths, contents in batches:
            rows = [screen(p, c, root, max_pixels) for p, c in zip(paths, contents, strict=True)]
            yield pd.DataFrame(rows, columns=_SCREENING.fieldNames(), dtype=object)

    screened = images.withColumn("_screening", F.pandas_udf(screen_batches, _SCREENING)("path", "content"))
    return screened.select(*images.columns, *(f"_screening.{name}" for name in _SCREENING.fieldNames()))
