"""Accounting for every file, at the cost of the change: what a run touched is verified, the rest was already.

A run's plan finds every listed file whose rows across the tables disagree and reads
it again (`ingest_plan.py`): every file it leaves alone was consistent and stays so,
since the run's merges touch only the paths it read or found gone. So after the
commits, checking those touched paths, together with the tables' row counts from
their logs, says exactly what a full join of every table would: each listed file
labeled or rejected exactly once, each labeled one featurized, nothing else held.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Totals:
    """Row counts of the four tables' versions, from their logs."""

    raw: int
    labeled: int
    rejected: int
    features: int


PARTS = ("listed", "labeled", "rejected", "featurized")  # raw_images and the three tables, as a path's rows count
CARRIED = ("label", "split", "content_hash")  # what the labeled rows bring along: the label counts and conflicts'


def touched_rows(touched: DataFrame, raw: DataFrame, labeled: DataFrame, rejected: DataFrame, features: DataFrame):
    """Every row the four tables hold for the paths a run changed, marked by its table (`part`), the labeled ones
    with their label, split and hash: one scan of each table, in one query."""
    unknown = [F.lit(None).cast("string").alias(c) for c in CARRIED]
    parts = [
        raw.select("path", F.lit("listed").alias("part"), *unknown),
        labeled.select("path", F.lit("labeled").alias("part"), *CARRIED),
        rejected.select("path", F.lit("rejected").alias("part"), *unknown),
        features.select("path", F.lit("featurized").alias("part"), *unknown),
    ]
    rows = parts[0].unionByName(parts[1]).unionByName(parts[2]).unionByName(parts[3])
    return rows.join(touched.select("path").distinct(), "path", "left_semi")


def touched_counts(rows: DataFrame) -> dict[str, int]:
    """Of the paths in `rows` (`touched_rows`): how many are listed and in no part, in both, labeled but not
    featurized, featurized but not labeled, or held though not listed."""
    per_path = rows.groupBy("path").agg(*(F.count_if(F.col("part") == part).alias(part) for part in PARTS))
    times = {part: F.col(part) for part in PARTS}
    listed = times["listed"] > 0
    row = per_path.agg(
        F.count_if(listed).alias("touched_listed"),
        F.count_if(listed & (times["labeled"] + times["rejected"] == 0)).alias("missing"),
        F.count_if(~listed & (times["labeled"] + times["rejected"] + times["featurized"] > 0)).alias("unexpected"),
        F.count_if((times["labeled"] + times["rejected"] > 1) | (times["featurized"] > 1)).alias("duplicated"),
        F.count_if(listed & (times["labeled"] > 0) & (times["featurized"] == 0)).alias("unfeaturized"),
        F.count_if(listed & (times["featurized"] > 0) & (times["labeled"] == 0)).alias("stray_features"),
    ).first()
    return {name: int(row[name] or 0) for name in row.asDict()}


def labeled_of(rows: DataFrame) -> DataFrame:
    """The labeled rows among `touched_rows`: path, label, split and hash."""
    return rows.filter(F.col("part") == "labeled").select("path", *CARRIED)


def partition_counts(totals: Totals, touched: dict[str, int], duplicated_before: int) -> dict[str, dict[str, int]]:
    """The two partitions the blocking checks judge, as counts: listed = labeled + rejected, labeled = featured."""
    duplicated = touched["duplicated"] + duplicated_before
    return {
        "labeled_images_reconcile": {
            "raw_images": totals.raw,
            "labeled_images": totals.labeled,
            "rejected_images": totals.rejected,
            "missing": touched["missing"],
            "unexpected": touched["unexpected"],
            "duplicated": duplicated,
        },
        "every_image_accounted_for": {
            "raw_images": totals.raw,
            "mobilenet_features": totals.features,
            "rejected_images": totals.rejected,
            "missing": touched["missing"] + touched["unfeaturized"],
            "unexpected": touched["unexpected"] + touched["stray_features"],
            "duplicated": duplicated,
        },
    }


def balanced(counts: dict[str, int], names: tuple[str, ...]) -> bool:
    """Whether a partition's counts say every raw file is in exactly one of its parts."""
    return (
        counts["raw_images"] == sum(counts[n] for n in names)
        and counts["missing"] == counts["unexpected"] == counts["duplicated"] == 0
    )


def label_counts(labeled: DataFrame) -> dict[tuple[str | None, str], int]:
    """Images per (split, label)."""
    return {(r["split"], r["label"]): int(r["count"]) for r in labeled.groupBy("split", "label").count().collect()}


def conflicts_among(labeled: DataFrame, hashes: DataFrame | None, shown_paths: int = 10) -> list[dict]:
    """The hashes (all of them, or those of `hashes`) whose images sit under more than one label."""
    rows = labeled if hashes is None else labeled.join(hashes.distinct(), "content_hash", "left_semi")
    per_hash = rows.groupBy("content_hash").agg(
        F.sort_array(F.collect_set("label")).alias("labels"), F.sort_array(F.collect_list("path")).alias("paths")
    )
    found = per_hash.filter(F.size("labels") > 1).collect()
    return [
        {"content_hash": r["content_hash"], "labels": list(r["labels"]), "paths": list(r["paths"][:shown_paths])}
        for r in found
    ]
