"""Which failures cannot mend by trying again, so that a step's retry policy waits only on those that can.

A missing module on the nodes, a bug, a plan Spark cannot analyse fail the same way
on every attempt: retrying them costs the backoff (minutes of a cluster) and hides
the error behind "up for retry". Throttling, timeouts, lost executors and the like
stay retried. Spark wraps a Python worker's error in its own exception
(`PythonException`, `Py4JJavaError`) with the worker's traceback in its text, so
that text is read too.
"""

import re

# Python errors that say the code or its environment is wrong, not the moment.
LASTING_PYTHON_ERRORS = (ImportError, SyntaxError, NameError, TypeError, AttributeError, NotImplementedError)
# Spark's errors of a query that cannot be analysed (a missing column, a type mismatch): by class name, as PySpark
# raises them (pyspark.errors.AnalysisException and its subclasses).
LASTING_SPARK_ERRORS = ("AnalysisException",)
_WORKER_LINE = re.compile(
    r"^\s*(?:\w+\.)*(" + "|".join(e.__name__ for e in (*LASTING_PYTHON_ERRORS, ModuleNotFoundError)) + r"): .*$",
    re.MULTILINE,
)


def lasting_error(error: BaseException) -> str | None:
    """The line that says why `error` would fail every attempt (`ModuleNotFoundError: No module named 'x'`), or
    None when it may mend by waiting. Follows the chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        spark_names = {cls.__name__ for cls in type(current).__mro__} & set(LASTING_SPARK_ERRORS)
        if isinstance(current, LASTING_PYTHON_ERRORS) or spark_names:
            return f"{type(current).__name__}: {current}".splitlines()[0]
        found = _WORKER_LINE.search(str(current))
        if found:
            return found.group(0).strip()
        current = current.__cause__ or current.__context__
    return None
