"""streams.worker.topics: the topic watch recreates topics a broker lost, with the configured partition counts.

Against the real local broker (session stack): topics are deleted behind the
worker's back, as a tansu restart does, and one round of the watch must bring
them back with ``topic_partitions`` (references: 1) — never the broker's choice.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.broker.admin import admin_client, delete_topics
from streams.worker.references import references_topic
from streams.worker.topics import TopicWatch, ensure_topics, worker_topics

pytestmark = pytest.mark.integration


def _counts(settings, names):
    with admin_client(settings) as admin:
        have = set(admin.list_topics())
        present = [n for n in names if n in have]
        return {d.get("name", d.get("topic")): len(d.get("partitions") or []) for d in admin.describe_topics(present)}


async def _one_round(watch: TopicWatch) -> list[str]:
    client = await watch.connect()
    try:
        return await watch.check(client)
    finally:
        await client.close()


def test_lost_topics_are_recreated_with_the_configured_partitions(settings, caplog):
    ensure_topics(settings)
    names = worker_topics(settings)
    assert references_topic(settings) in names
    gone = [settings.topic_inferences, settings.topic_deadletter, references_topic(settings)]
    delete_topics(settings, gone)
    assert not set(gone) & set(_counts(settings, names))
    watch = TopicWatch(settings)
    with caplog.at_level(logging.WARNING, logger="streams.worker.topics"):
        missing = asyncio.run(_one_round(watch))
    assert sorted(missing) == sorted(gone)
    assert any(
        "lost its state" in r.getMessage() and "recreating them with 4 partitions" in r.getMessage()
        for r in caplog.records
    )
    want = {n: (1 if n == references_topic(settings) else settings.topic_partitions) for n in names}
    assert _counts(settings, names) == want
    assert asyncio.run(_one_round(watch)) == []  # nothing missing any more: quiet
    delete_topics(settings, [references_topic(settings)])


def test_without_recreate_it_only_warns(settings, caplog):
    ensure_topics(settings)
    delete_topics(settings, [settings.topic_alerts])
    watch = TopicWatch(settings, recreate=False)
    with caplog.at_level(logging.WARNING, logger="streams.worker.topics"):
        assert asyncio.run(_one_round(watch)) == [settings.topic_alerts]
    assert "--no-create-topics" in caplog.text
    assert settings.topic_alerts not in _counts(settings, worker_topics(settings))
    delete_topics(settings, [references_topic(settings)])


def test_a_topic_with_another_partition_count_is_reported_once(settings, caplog):
    ensure_topics(settings)
    delete_topics(settings, [settings.topic_alerts])
    from streams.broker.admin import ensure_topics as create

    create(settings, partitions=2)  # only the missing alerts topic: someone else's, with 2 partitions
    watch = TopicWatch(settings)
    with caplog.at_level(logging.WARNING, logger="streams.worker.topics"):
        assert asyncio.run(_one_round(watch)) == []
        assert asyncio.run(_one_round(watch)) == []
    said = [r.getMessage() for r in caplog.records if "has 2 partitions, not 4" in r.getMessage()]
    assert len(said) == 1 and settings.topic_alerts in said[0]
    delete_topics(settings, [references_topic(settings)])


def test_the_partials_topic_exists_only_when_a_model_is_sharded(settings):
    from streams.worker.topics import partials_topic_name

    partials = partials_topic_name(settings)
    ensure_topics(settings)  # no model sharded
    assert partials not in worker_topics(settings)
    assert partials not in _counts(settings, [partials])
    ensure_topics(settings, sharded=True)  # a config that now shards a model
    assert partials in worker_topics(settings, sharded=True)
    assert _counts(settings, [partials]) == {partials: settings.topic_partitions}
    delete_topics(settings, [partials, references_topic(settings)])


def test_the_watch_recreates_the_partials_topic_only_for_a_sharded_config(settings):
    from streams.worker.topics import partials_topic_name

    partials = partials_topic_name(settings)
    ensure_topics(settings)
    assert asyncio.run(_one_round(TopicWatch(settings))) == []  # unsharded: the missing partials topic is fine
    assert partials not in _counts(settings, [partials])
    assert asyncio.run(_one_round(TopicWatch(settings, sharded=True))) == [partials]
    assert _counts(settings, [partials]) == {partials: settings.topic_partitions}
    delete_topics(settings, [partials, references_topic(settings)])


def test_a_worker_creates_the_partials_topic_once_its_config_shards_a_model(settings, settings_env, tmp_path):
    """The real ``driftwatch worker`` start-up: unsharded config, no partials topic; the same group restarted
    with the model sharded (a config change), the topic is there before the worker joins its group."""
    import yaml

    from streams.worker.topics import partials_topic_name
    from tests.integration.test_hot_model import reference_csv
    from tests.reliability.helpers import monitors_file, tail, wait_for, worker

    partials = partials_topic_name(settings)
    plain = monitors_file(tmp_path, ["m"], window=1000, name="plain.yaml")
    cfg = yaml.safe_load(plain.read_text())
    cfg["models"][0].update(shards=4, reference={"file": reference_csv(tmp_path / "reference.csv")})
    sharded = tmp_path / "sharded.yaml"
    sharded.write_text(yaml.safe_dump(cfg))
    for path, want in ((plain, False), (sharded, True)):
        log = tmp_path / f"{path.stem}.log"
        with worker(settings_env, path, log) as proc:  # "worker for N model(s)" follows the topics' creation
            wait_for(
                lambda log=log: "worker for 1 model(s)" in log.read_text(errors="replace"), 60, "start", [proc], log
            )
            assert (partials in _counts(settings, [partials])) is want, tail(log)
    delete_topics(settings, [partials, references_topic(settings)])
