"""What starts the work: a sensor that finds new, changed and gone photos cheaply; automation conditions for what
follows; checks that warn when the CSV or the classifier lag the newest photos.

- `new_photos` (a sensor): on a file system, a stat-only listing of the images root
  compared with `raw_images`' own (read by delta-rs, no JVM); on S3, the bucket's
  event notifications drained from an SQS queue (`FRUITS_IMAGES_QUEUE`), with a full
  listing every `FRUITS_RECONCILE_HOURS` (and on the first run) that catches
  whatever the notifications missed: a million objects are not listed every tick. A
  run is requested only when something changed, tagged with how many files are new,
  changed, gone; on S3 it examines the notified paths only.
- Automation conditions: the PCA, the projection and CSV, the classifier and the
  phone's model run when an upstream asset's data version (its table's id and
  version, a model's version folder) really changed, not on every materialization
  (`ON_NEW_DATA`); an unchanged step costs nothing anyway.
- `lags_newest_photos` (asset checks on the CSV and the classifier, run by the
  pipeline and hourly by a schedule): how long the newest committed photos have been
  waiting to reach them; a warning past `FRUITS_FRESHNESS_HOURS`.
"""

import hashlib
import json
import time
from urllib.parse import unquote_plus

import boto3
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_check,
    define_asset_job,
    sensor,
)

from fruits_assets.assets.screening import STATE_FILE, ScreeningState
from fruits_assets.resources.guard import READ_ONLY_TAG
from fruits_assets.resources.locations import DataLocations
from fruits_assets.resources.tables import DeltaTables
from fruits_assets.spark.listing import list_files, listing_changes
from fruits_assets.vision.delta_log import commit_times
from fruits_assets.vision.paths import bucket_and_prefix, uses_s3

INGEST = ("raw_images", "labeled_images", "rejected_images", "mobilenet_features", "class_index")
MAX_PATHS = 20_000  # a change set larger than this is read by a full listing rather than passed path by path
SQS_BATCHES = 100  # receives per tick, 10 messages each: the rest waits for the next tick
STORAGE_TAG = "fruits/storage"

# Eager, but on a real data-version change of a dependency: a materialization that changed nothing (same
# table version, same model folder) does not start the steps below it. A dependency requested in the same tick
# takes its dependents along in the same run (they find out for themselves, at no cost, if it changed nothing).
ON_NEW_DATA = AutomationCondition.eager().replace(
    "any_deps_updated",
    AutomationCondition.any_deps_match(
        (AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target())
        | AutomationCondition.will_be_requested()
    ).with_label("any_deps_data_version_changed"),
)


def _digest(*parts: list[str]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _request(paths: list[str] | None, counts: dict[str, int], why: str, key: str, storage: str) -> RunRequest:
    """A run of the ingestion for `paths` (None: a full listing), tagged with why and how many."""
    config = {"ops": {"raw_images": {"config": {"paths": paths}}}} if paths is not None else {}
    tags = {f"fruits/{name}": str(n) for name, n in counts.items()} | {"fruits/reason": why, STORAGE_TAG: storage}
    return RunRequest(run_key=key, run_config=config, tags=tags, asset_selection=None)


def listing_request(
    locations: DataLocations, tables: DeltaTables, cursor: str | None, waiting: int
) -> RunRequest | SkipReason:
    """A file system's images root listed (stat only) and compared with `raw_images`: a run for what changed.

    The run lists the root again as it starts (a stat listing costs little next to a run), so one run waiting
    in the queue already covers whatever changes before it starts: none is requested while one waits.
    """
    if waiting:
        return SkipReason("a run of this sensor waits in the queue: it will list the root as it starts")
    listing = list_files(locations.images_root)
    known = tables.columns("raw_images", ["path", "stamp"])
    new, gone, added = listing_changes(listing, known)
    if new.num_rows == 0 and gone.num_rows == 0:
        return SkipReason(f"nothing new under {locations.images_root} ({listing.num_rows} files, all known)")
    paths = sorted(new.column("path").to_pylist() + gone.column("path").to_pylist())
    key = _digest(paths, new.column("stamp").to_pylist())
    if key == cursor:
        return SkipReason(f"the run for these {len(paths)} changes is requested already")
    counts = {"new": added, "changed": new.num_rows - added, "gone": gone.num_rows}
    return _request(None, counts, "listing", key, locations.storage_root)


def _events(queue_url: str, root: str) -> tuple[set[str], set[str], list[dict]]:
    """Drain S3 event notifications: keys created and removed under the images root, and the messages read."""
    sqs = boto3.client("sqs")
    bucket, prefix = bucket_and_prefix(root)
    scheme = root.split("://", 1)[0]
    created, removed, messages = set(), set(), []
    for _ in range(SQS_BATCHES):
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            break
        messages += batch
        for message in batch:
            for record in json.loads(message["Body"]).get("Records", []):  # S3's test event has none
                key = unquote_plus(record["s3"]["object"]["key"])
                if record["s3"]["bucket"]["name"] != bucket or not key.startswith(f"{prefix}/" if prefix else ""):
                    continue
                path = f"{scheme}://{bucket}/{key}"
                (created if record["eventName"].startswith("ObjectCreated") else removed).add(path)
    return created, removed, messages


def notification_request(
    locations: DataLocations,
    tables: DeltaTables,
    queue_url: str | None,
    reconcile_seconds: float,
    cursor: str | None,
    busy: int,
) -> tuple[RunRequest | SkipReason, str | None, list[dict]]:
    """An S3 images root: its notifications drained, a full listing when one is due; the request, the new cursor,
    and the messages to delete once the request is made.

    A full listing is due at the first tick, every `reconcile_seconds`, and while there is no table yet and no
    run of this sensor (`busy`) is on its way to making one.
    """
    state = json.loads(cursor) if cursor else {}
    now, root = time.time(), locations.images_root
    first = "listed" not in state or (tables.state("raw_images") is None and not busy)
    if first or now - state["listed"] > reconcile_seconds or not queue_url:
        if queue_url is None and not first and now - state["listed"] <= reconcile_seconds:
            return SkipReason("no FRUITS_IMAGES_QUEUE: only the periodic full listing finds new photos"), cursor, []
        request = _request(None, {}, "reconcile", f"listing-{int(now)}", locations.storage_root)
        # What the queue held is covered by this listing: drained with it.
        return request, json.dumps({"listed": now}), _events(queue_url, root)[2] if queue_url else []
    created, removed, messages = _events(queue_url, root)
    if not created and not removed:
        return SkipReason(f"no notification of a change under {root}"), cursor, messages
    paths = sorted(created | removed)
    counts = {"created": len(created), "removed": len(removed - created)}
    key = _digest([m["MessageId"] for m in messages])
    whole = len(paths) > MAX_PATHS
    return _request(None if whole else paths, counts, "notifications", key, locations.storage_root), cursor, messages


QUEUED = [DagsterRunStatus.QUEUED]
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def _runs_of_this_sensor(context: SensorEvaluationContext, statuses: list[DagsterRunStatus]) -> int:
    return context.instance.get_runs_count(RunsFilter(tags={"dagster/sensor_name": "new_photos"}, statuses=statuses))


def build_photo_sensor(queue_url: str | None, interval_seconds: int, reconcile_seconds: float) -> SensorDefinition:
    """The sensor that starts ingestion when photos arrive, change or go."""

    @sensor(
        name="new_photos",
        target=AssetSelection.assets(*INGEST),
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="New, changed or gone photos under the images root start a run that reads only those.",
    )
    def new_photos(context: SensorEvaluationContext, locations: DataLocations, tables: DeltaTables):
        if not uses_s3(locations.images_root):
            found = listing_request(locations, tables, context.cursor, _runs_of_this_sensor(context, QUEUED))
            if isinstance(found, SkipReason):
                return found
            return SensorResult(run_requests=[found], cursor=found.run_key)
        busy = _runs_of_this_sensor(context, IN_FLIGHT)
        found, cursor, messages = notification_request(
            locations, tables, queue_url, reconcile_seconds, context.cursor, busy
        )
        if messages:  # read, and turned into the request below (or found to say nothing): gone from the queue
            sqs = boto3.client("sqs")
            for start in range(0, len(messages), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages[start : start + 10])
                ]
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        if isinstance(found, SkipReason):
            return SensorResult(skip_reason=found, cursor=cursor)
        return SensorResult(run_requests=[found], cursor=cursor)

    return new_photos


def build_automation_sensor(storage: str, interval_seconds: int) -> AutomationConditionSensorDefinition:
    """Dagster's automation conditions, evaluated every `interval_seconds`; its runs are tagged with the root."""
    return AutomationConditionSensorDefinition(
        "fruits_automation",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval_seconds,
        run_tags={STORAGE_TAG: storage},
    )


def _lag(tables: DeltaTables, locations: DataLocations, chain_end: dict) -> tuple[float, str]:
    """Seconds since the oldest commit that has not reached the end of the chain, and where it waits."""
    raw, features, projected = (tables.state(n) for n in ("raw_images", "mobilenet_features", "pca_features"))
    stored = locations.read(locations.path_of(STATE_FILE))
    screened = ScreeningState.from_bytes(stored).made_from["raw_images"] if stored else None
    links = [
        ("raw_images", raw, screened, "screening"),
        (
            "mobilenet_features",
            features,
            (projected.user_metadata.get("made_from") or {}).get("mobilenet_features") if projected else None,
            "pca_features",
        ),
        ("pca_features", projected, chain_end.get("pca_features"), chain_end["name"]),
    ]
    for name, state, reached, waiting in links:
        if state is None:
            continue
        if reached is None or reached.get("table_id") != state.table_id:
            return time.time() - commit_times(tables.path(name), locations.delta_options, 0)[0], waiting
        if reached["version"] < state.version:
            first = commit_times(tables.path(name), locations.delta_options, reached["version"] + 1)[0]
            return time.time() - first, waiting
    return 0.0, "nothing"


def _freshness(name: str, reached: dict, tables, locations, warn_hours: float) -> AssetCheckResult:
    lag, where = _lag(tables, locations, reached | {"name": name})
    return AssetCheckResult(
        passed=lag <= warn_hours * 3600,
        severity=AssetCheckSeverity.WARN,
        metadata={"lag_hours": round(lag / 3600, 3), "waiting_at": where, "warn_after_hours": warn_hours},
    )


def build_freshness(warn_hours: float) -> tuple[list, ScheduleDefinition]:
    """The two freshness checks and the hourly schedule that runs them (they read logs only: no Spark)."""

    @asset_check(asset="pca_features_csv", name="lags_newest_photos", blocking=False)
    def csv_lag(context: AssetCheckExecutionContext, tables: DeltaTables, locations: DataLocations):
        recorded = locations.read(locations.path_of("pca_features.csv.json"))
        return _freshness("pca_features_csv", json.loads(recorded) if recorded else {}, tables, locations, warn_hours)

    @asset_check(asset="fruit_classifier", name="lags_newest_photos", blocking=False)
    def classifier_lag(context: AssetCheckExecutionContext, tables: DeltaTables, locations: DataLocations):
        pointer = locations.read(locations.path_of("fruit_classifier/current.json"))
        made_from = json.loads(pointer)["made_from"] if pointer else {}
        return _freshness("fruit_classifier", made_from, tables, locations, warn_hours)

    checks = [csv_lag, classifier_lag]
    # Read-only: it takes no lock, so a long run writing the storage root neither fails it nor makes it wait.
    job = define_asset_job("freshness_checks", selection=AssetSelection.checks(*checks), tags={READ_ONLY_TAG: "true"})
    schedule = ScheduleDefinition(
        name="hourly_freshness", cron_schedule="0 * * * *", target=job, default_status=DefaultScheduleStatus.RUNNING
    )
    return checks, schedule
