"""The driver class archive: named in the session's options only once built, mapped by a real driver JVM."""

from pathlib import Path

from fruits_assets.prepare import in_fresh_process, start_with
from fruits_assets.spark.config import (
    CLASS_ARCHIVE,
    JAVA_OPTIONS,
    NATIVE_TRIM,
    driver_java_options,
    jvm_accepts,
    local_config,
    with_native_trim,
)


def test_options_name_the_archive_only_once_it_exists(tmp_path: Path):
    archive = tmp_path / "driver.jsa"
    assert driver_java_options(archive) == {}
    archive.write_bytes(b"")
    assert driver_java_options(archive) == {JAVA_OPTIONS: f"-XX:SharedArchiveFile={archive}"}


def test_the_native_heap_trim_is_asked_only_of_a_jvm_that_knows_it(monkeypatch):
    assert jvm_accepts(NATIVE_TRIM), "Java 17.0.9 or later, as make setup's JDK, trims its native heap"
    assert not jvm_accepts("-XX:NoSuchOptionAnywhere=1")
    assert with_native_trim({"spark.master": "local[1]"}) == {"spark.master": "local[1]", JAVA_OPTIONS: NATIVE_TRIM}
    assert with_native_trim({JAVA_OPTIONS: "-Xss4m"})[JAVA_OPTIONS] == f"-Xss4m {NATIVE_TRIM}"
    monkeypatch.setenv("JAVA_HOME", "/nonexistent")  # no JVM to ask: none is asked, nothing fails
    assert not jvm_accepts.__wrapped__(NATIVE_TRIM)


def test_local_sessions_map_the_archive_make_setup_built():
    assert CLASS_ARCHIVE.is_file(), f"make setup builds {CLASS_ARCHIVE}"
    assert local_config()[JAVA_OPTIONS] == f"-XX:SharedArchiveFile={CLASS_ARCHIVE}"
    # -Xshare:on: the driver JVM fails to start unless it maps the archive (same JVM build, same jars).
    assert in_fresh_process(start_with, CLASS_ARCHIVE) == 0


def test_a_truncated_archive_fails_the_check_that_guards_its_installation(tmp_path: Path):
    truncated = tmp_path / "truncated.jsa"
    with CLASS_ARCHIVE.open("rb") as full:
        truncated.write_bytes(full.read(CLASS_ARCHIVE.stat().st_size // 4))
    assert in_fresh_process(start_with, truncated) != 0
