"""Accounting for every image: each raw image in exactly one of the outputs that follow it."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def account_for(raw: DataFrame, parts: dict[str, DataFrame]) -> tuple[bool, dict[str, int]]:
    """Whether every raw image's path is in exactly one of `parts`, and the counts that say so.

    `missing`: raw images in no part; `unexpected`: part rows for no raw image;
    `duplicated`: paths in more than one part, or twice in one.
    """
    tagged = reduce(
        DataFrame.unionByName, [frame.select("path", F.lit(name).alias("part")) for name, frame in parts.items()]
    )
    per_path = tagged.groupBy("path").agg(
        F.count("*").alias("times"), *(F.count_if(F.col("part") == name).alias(name) for name in parts)
    )
    # One Spark job: the join and every count in a single aggregation.
    counts = (
        raw.select("path", F.lit(True).alias("raw"))
        .join(per_path, "path", "full_outer")
        .agg(
            F.count_if(F.col("raw")).alias("raw_images"),
            F.count_if(F.col("times").isNull()).alias("missing"),
            F.count_if(F.col("raw").isNull()).alias("unexpected"),
            F.count_if(F.col("times") > 1).alias("duplicated"),
            *(F.coalesce(F.sum(name), F.lit(0)).alias(name) for name in parts),
        )
        .first()
        .asDict()
    )
    balanced = counts["raw_images"] == sum(counts[name] for name in parts)
    return balanced and counts["missing"] == counts["unexpected"] == counts["duplicated"] == 0, counts
