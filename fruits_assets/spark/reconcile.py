"""Accounting for every file: each raw file in exactly one part of each partition of the outputs, in one job."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def reconcile(
    raw: DataFrame, parts: dict[str, DataFrame], partitions: dict[str, tuple[str, ...]]
) -> dict[str, dict[str, int]]:
    """For each partition (a name and the parts that should split the raw files between them), its counts.

    `missing`: raw files in none of its parts; `unexpected`: part rows for no raw file;
    `duplicated`: paths in more than one of its parts, or twice in one. Every part's
    row count is given too. One Spark job: the join and every count in one aggregation.
    """
    tagged = reduce(
        DataFrame.unionByName, [frame.select("path", F.lit(name).alias("part")) for name, frame in parts.items()]
    )
    per_path = tagged.groupBy("path").agg(*(F.count_if(F.col("part") == name).alias(name) for name in parts))
    joined = raw.select("path", F.lit(True).alias("raw")).join(per_path, "path", "full_outer")
    aggregates = [F.count_if(F.col("raw")).alias("raw_images")]
    aggregates += [F.coalesce(F.sum(name), F.lit(0)).alias(name) for name in parts]
    for check, names in partitions.items():
        times = reduce(lambda a, b: a + b, [F.coalesce(F.col(n), F.lit(0)) for n in names])
        aggregates += [
            F.count_if(F.col("raw") & (times == 0)).alias(f"{check}.missing"),
            F.count_if(F.col("raw").isNull() & (times > 0)).alias(f"{check}.unexpected"),
            F.count_if(times > 1).alias(f"{check}.duplicated"),
        ]
    totals = joined.agg(*aggregates).first().asDict()
    result = {}
    for check, names in partitions.items():
        counts = {"raw_images": totals["raw_images"], **{n: totals[n] for n in names}}
        counts |= {k: totals[f"{check}.{k}"] for k in ("missing", "unexpected", "duplicated")}
        result[check] = counts
    return result


def balanced(counts: dict[str, int], names: tuple[str, ...]) -> bool:
    """Whether a partition's counts say every raw file is in exactly one of its parts."""
    return (
        counts["raw_images"] == sum(counts[n] for n in names)
        and counts["missing"] == counts["unexpected"] == counts["duplicated"] == 0
    )


def label_conflicts(labeled: DataFrame, shown: int) -> tuple[int, list[dict]]:
    """Images whose bytes (SHA-256) sit under more than one label: how many, and the first `shown`."""
    per_hash = labeled.groupBy("content_hash").agg(
        F.sort_array(F.collect_set("label")).alias("labels"), F.sort_array(F.collect_list("path")).alias("paths")
    )
    conflicts = per_hash.filter(F.size("labels") > 1).orderBy("content_hash")
    rows = conflicts.limit(shown).collect()
    count = conflicts.count() if len(rows) == shown else len(rows)
    return count, [{"content_hash": r["content_hash"], "labels": r["labels"], "paths": r["paths"][:10]} for r in rows]
