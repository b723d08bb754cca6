"""A few rows of a DataFrame as markdown, for the Dagster UI."""

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType

PREVIEW_ROWS = 5


def preview_markdown(frame: DataFrame, rows: int = PREVIEW_ROWS) -> str:
    """The first rows as a markdown table; bytes and vectors shown by their size, not their values."""
    columns = []
    for field in frame.schema.fields:
        if isinstance(field.dataType, BinaryType):
            columns.append(F.concat(F.length(field.name).cast("string"), F.lit(" bytes")).alias(field.name))
        elif isinstance(field.dataType, ArrayType):
            columns.append(F.concat(F.lit("array["), F.size(field.name).cast("string"), F.lit("]")).alias(field.name))
        else:
            columns.append(F.col(field.name))
    return frame.select(columns).limit(rows).toPandas().to_markdown(index=False)
