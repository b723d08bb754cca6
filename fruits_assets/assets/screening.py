"""What `screen_and_featurize` knows after a run: the versions it left, the label counts, the checks' verdicts.

Kept at `<storage>/_state/screen_and_featurize.json`, written after a run's last
commit. The next run compares it with the tables' logs (no JVM): the same listing,
recipe and table versions, no read left to retry and every check passed mean
nothing to do. A run killed before writing it leaves versions that no longer match,
and the next run plans from the tables themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

STATE_FILE = "_state/screen_and_featurize.json"


@dataclass(frozen=True)
class CheckVerdict:
    passed: bool
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ScreeningState:
    """The outcome of the last complete screening."""

    made_from: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    retry_pending: int
    label_counts: list[tuple[str | None, str, int]]
    conflicts: list[dict[str, Any]]
    checks: dict[str, CheckVerdict] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ScreeningState:
        raw = json.loads(data)
        raw["label_counts"] = [tuple(entry) for entry in raw["label_counts"]]
        raw["checks"] = {name: CheckVerdict(**verdict) for name, verdict in raw["checks"].items()}
        return cls(**raw)

    def counts(self) -> dict[tuple[str | None, str], int]:
        return {(split, label): n for split, label, n in self.label_counts}

    def leaves_every_file_done(self, tables: dict[str, dict[str, Any]], blocking: tuple) -> bool:
        """Every file listed when this state was written is still done: the tables as this state left them, no
        read to retry, the blocking checks passed (each file in the tables exactly once)."""
        return (
            self.tables == tables
            and self.retry_pending == 0
            and all(name in self.checks and self.checks[name].passed for name in blocking)
        )

    def still_current(self, made_from: dict[str, Any], tables: dict[str, dict[str, Any]], blocking: tuple) -> bool:
        """Nothing to do: the same inputs, and every file done as this state left it."""
        return self.made_from == made_from and self.leaves_every_file_done(tables, blocking)
