"""Projects take turns within a priority, within a cap per project, and can be paused:
real Redis, real workers (in-process solo or threads, and prefork subprocesses)."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from celery.contrib.testing.worker import start_worker
from conftest import fake_ffmpeg, small_job, wait_for
from prometheus_client.parser import text_string_to_metric_families

import mobius_preview
from mobius_preview import QueueFull, client, layout, metrics, records, turns
from mobius_preview.config import settings


def _jobs(make_job, project: str, n: int, **overrides) -> list[dict]:
    return [make_job(projectId=project, **overrides) for _ in range(n)]


def _start_order(jobs: list[dict]) -> list[str]:
    """The jobs' projects in the order the jobs started (their records' startedTs)."""
    started = {j["jobId"]: (float(records.get(j["jobId"])["startedTs"]), j["projectId"]) for j in jobs}
    return [project for _, project in sorted(started.values())]


def _run_all_one_at_a_time(jobs: list[dict]) -> None:
    """One worker, one process: the jobs start one after another, in the order Celery hands them."""
    with start_worker(mobius_preview.app, pool="solo", concurrency=1, perform_ping_check=False,
                      loglevel="WARNING"):
        for job in jobs:
            assert client.wait(job["jobId"], timeout=120)["state"] == "succeeded"


@pytest.mark.worker
def test_one_job_of_a_second_project_starts_within_the_first_few_behind_a_batch_of_sixty(make_job):
    batch = _jobs(make_job, "batch-project", 60)
    assert all(r.created for r in mobius_preview.submit_many(batch))
    (single,) = _jobs(make_job, "single-project", 1)
    mobius_preview.submit(single)
    assert records.queue_depths()["normal"] == 61
    _run_all_one_at_a_time([*batch, single])
    order = _start_order([*batch, single])
    position = order.index("single-project")
    print(f"the single job started {position + 1}th of {len(order)}")
    # Handed over before it came: at most PREVIEW_QUEUE_AHEAD jobs of the batch, then one turn.
    assert position <= settings().queue_ahead + 1, order[:10]


@pytest.mark.worker
def test_three_projects_of_different_sizes_get_fair_shares_while_all_have_work(make_job):
    sizes = {"large": 30, "medium": 12, "small": 6}
    jobs = {name: _jobs(make_job, name, n) for name, n in sizes.items()}
    for name in sizes:  # the largest first: first come would serve it alone for 30 starts
        mobius_preview.submit_many(jobs[name])
    everything = [j for name in sizes for j in jobs[name]]
    _run_all_one_at_a_time(everything)
    order = _start_order(everything)
    window = order[:max(i for i, p in enumerate(order) if p == "small") + 1]  # all three had work
    shares = {name: window.count(name) for name in sizes}
    print(f"starts while all three had work: {shares} of {len(window)}")
    assert shares["small"] == sizes["small"]
    # Each turn is one start per project; the largest had up to PREVIEW_QUEUE_AHEAD handed over first.
    assert max(shares.values()) - min(shares.values()) <= settings().queue_ahead + 1, window
    assert len(window) <= 3 * sizes["small"] + settings().queue_ahead + 1


def _intervals(jobs: list[dict]) -> list[tuple[float, float]]:
    rows = [records.get(j["jobId"]) for j in jobs]
    return sorted((float(r["startedTs"]), float(r["finishedTs"])) for r in rows)


@pytest.mark.slow(60)
def test_a_project_capped_at_one_never_runs_two_at_once_while_others_use_the_free_processes(
        worker_process, settings_env, tmp_path):
    settings_env(PREVIEW_PROJECT_CONCURRENCY="1")  # this process's feed (at acceptance) caps too
    slow = fake_ffmpeg(tmp_path, sleep=1.0)  # each render's last encode takes a second more
    env = {"PREVIEW_PROJECT_CONCURRENCY": "1", "FFMPEG_BINARY": str(slow)}
    jobs = {}
    for project, n in (("capped", 5), ("other-a", 4), ("other-b", 4)):
        jobs[project] = []
        for _ in range(n):
            job = small_job()
            job["projectId"] = project
            jobs[project].append(job)
        mobius_preview.submit_many(jobs[project])
    for _ in range(2):
        worker_process(env=env, concurrency=2)
    finals = [client.wait(j["jobId"], timeout=240) for js in jobs.values() for j in js]
    assert {f["state"] for f in finals} == {"succeeded"}
    for project, mine in jobs.items():
        spans = _intervals(mine)
        overlaps = [(a, b) for a, b in pairwise(spans) if b[0] < a[1]]
        assert not overlaps, f"{project} ran two jobs at once: {overlaps}"
    capped = _intervals(jobs["capped"])
    others = _intervals(jobs["other-a"] + jobs["other-b"])
    meanwhile = [o for o in others if any(o[0] < c[1] and c[0] < o[1] for c in capped)]
    assert meanwhile, "no other project's job ran while the capped project's did"
    assert client.queue_stats()["projects"] == {}  # nothing left waiting or counted running


@pytest.mark.worker
def test_a_paused_project_is_held_without_losing_its_jobs_and_resume_releases_them(make_job):
    client.pause_project("held")
    held = _jobs(make_job, "held", 3)
    free = _jobs(make_job, "free", 3)
    mobius_preview.submit_many(held + free)
    stats = client.queue_stats()
    assert stats["projects"]["held"] == {"waiting": 3, "running": 0, "paused": True,
                                         "byPriority": {"high": 0, "normal": 3, "low": 0}}
    with start_worker(mobius_preview.app, pool="threads", concurrency=2, perform_ping_check=False,
                      loglevel="WARNING"):
        for job in free:
            assert client.wait(job["jobId"], timeout=60)["state"] == "succeeded"
        # Every free job has run; had the held ones been in the rotation, they would have taken turns.
        assert [client.status(j["jobId"])["state"] for j in held] == ["queued"] * 3
        assert all(client.status(j["jobId"])["startedAt"] is None for j in held)
        assert client.resume_project("held") == {"project": "held", "paused": False, "wasPaused": True}
        for job in held:
            assert client.wait(job["jobId"], timeout=60)["state"] == "succeeded"
    assert "held" not in client.queue_stats()["projects"]


def test_pausing_takes_back_jobs_handed_over_but_not_taken(make_job, redis_conn):
    jobs = _jobs(make_job, "early", 2, priority="high")
    mobius_preview.submit_many(jobs)
    high = layout.queue_keys()[0]
    assert redis_conn.llen(high) == 2  # an idle system: handed to Celery's list at once
    assert client.queue_stats()["projects"]["early"]["running"] == 2
    assert client.pause_project("early")["returned"] == 2
    assert redis_conn.llen(high) == 0 and records.queue_depths()["high"] == 2  # held, not lost
    assert client.queue_stats()["projects"]["early"] == {
        "waiting": 2, "running": 0, "paused": True, "byPriority": {"high": 2, "normal": 0, "low": 0}}
    client.resume_project("early")
    in_order = [json.loads(m)["headers"]["id"] for m in reversed(redis_conn.lrange(high, 0, -1))]
    assert in_order == [j["jobId"] for j in jobs]  # back on Celery's list, oldest first
    assert client.queue_stats()["projects"]["early"]["running"] == 2


def test_a_project_past_its_queue_limit_is_refused_while_others_are_accepted(make_job, settings_env):
    settings_env(PREVIEW_PROJECT_QUEUE_MAX="3")
    ahead = settings().queue_ahead
    results = mobius_preview.submit_many(_jobs(make_job, "greedy", ahead + 5))
    created = [r for r in results if not isinstance(r, QueueFull)]
    refused = [r for r in results if isinstance(r, QueueFull)]
    # PREVIEW_QUEUE_AHEAD handed to Celery's list (an idle system), then 3 waiting their turn.
    assert len(created) == ahead + 3 and len(refused) == 2
    assert refused[0].project == "greedy" and refused[0].depth == 3 and refused[0].limit == 3
    assert "PREVIEW_PROJECT_QUEUE_MAX" in str(refused[0])
    assert mobius_preview.submit(make_job(projectId="modest")).created
    assert client.queue_stats()["projects"]["greedy"]["waiting"] == 3


def test_per_project_facts_and_metrics_keep_label_cardinality_bounded(make_job):
    counts = {f"proj-{n:02d}": n + 1 for n in range(metrics.PROJECT_LABELS + 3)}
    for project, n in counts.items():
        mobius_preview.submit_many(_jobs(make_job, project, n, priority="low"))
    projects = client.queue_stats()["projects"]
    assert {p: f["waiting"] + f["running"] for p, f in projects.items()} == counts
    text = metrics.render_latest().decode()
    series = {s.labels["project"]: s.value for family in text_string_to_metric_families(text)
              if family.name == "mobius_preview_project_jobs" for s in family.samples
              if s.labels["state"] == "waiting"}
    assert len(series) == metrics.PROJECT_LABELS + 1
    busiest = sorted(counts, key=counts.get)[-metrics.PROJECT_LABELS:]
    assert set(series) == {*busiest, metrics.OTHER_PROJECTS}
    waiting = {p: f["waiting"] for p, f in projects.items()}
    assert series[metrics.OTHER_PROJECTS] == sum(v for p, v in waiting.items() if p not in busiest)


def test_reconcile_repairs_a_lost_rotation_and_a_job_released_but_ended(make_job, redis_conn):
    jobs = _jobs(make_job, "repairme", 4)
    mobius_preview.submit_many(jobs)
    normal = layout.queue_keys()[1]
    redis_conn.delete(normal)  # as if workers took the two handed over...
    redis_conn.delete(layout.turns_key("normal"))  # ...and a lost write: the project left the rotation
    records.finish(jobs[0]["jobId"], {"key": "k"}, rendered=False)  # one ended (uncounted once)
    records.client().hset(layout.job_key(jobs[1]["jobId"]), "state", "cancelled")  # ended by an old version
    assert client.queue_stats()["projects"]["repairme"]["running"] == 1
    assert turns.feed(redis_conn) == 0  # out of the rotation: its two waiting jobs are stuck
    assert turns.reconcile(redis_conn) == (1, 1)
    assert redis_conn.llen(normal) == 2  # the feed ran: both handed over
    assert client.queue_stats()["projects"]["repairme"] == {
        "waiting": 0, "running": 2, "paused": False, "byPriority": {"high": 0, "normal": 0, "low": 0}}
    assert turns.reconcile(redis_conn) == (0, 0)


def test_pause_and_resume_from_the_command_line(capsys):
    from mobius_preview.cli import main

    assert main(["pause", "cli-project"]) == 0
    assert json.loads(capsys.readouterr().out)["paused"] is True
    assert client.queue_stats()["projects"]["cli-project"]["paused"] is True
    assert main(["resume", "cli-project"]) == 0
    assert json.loads(capsys.readouterr().out) == {"project": "cli-project", "paused": False,
                                                   "wasPaused": True}
    assert main(["pause", "../etc"]) == 1
    assert "project" in capsys.readouterr().err


def test_a_job_accepted_into_an_idle_system_is_on_celerys_list_at_once(make_job, redis_conn):
    job = make_job(projectId="quick", priority="high")
    mobius_preview.submit(job)
    (message,) = redis_conn.lrange(layout.queue_keys()[0], 0, -1)
    assert json.loads(message)["headers"]["id"] == job["jobId"]
    assert redis_conn.exists(layout.project_list("high", "quick")) == 0


def test_keys_limited_to_projects_are_read_from_the_environment():
    from mobius_preview.config import load
    from mobius_preview.errors import ConfigError

    cfg = load({"PREVIEW_API_KEYS": "ops-key, team-key:proj-a+proj-b ,solo:proj-c"})
    assert cfg.api_keys == ("ops-key", "team-key", "solo")
    assert cfg.api_key_projects == (None, frozenset({"proj-a", "proj-b"}), frozenset({"proj-c"}))
    for bad, says in (("k:", "''"), ("k:a+../b", "'../b'"), (":proj", "no key")):
        with pytest.raises(ConfigError) as caught:
            load({"PREVIEW_API_KEYS": bad})
        assert str(caught.value).startswith("PREVIEW_API_KEYS:") and says in str(caught.value)
        assert "k:" not in str(caught.value) or bad.startswith(":")  # never the key itself
    with pytest.raises(ConfigError, match="PREVIEW_PROJECT_CONCURRENCY"):
        load({"PREVIEW_PROJECT_CONCURRENCY": "0"})
    assert load({}).project_concurrency == 0 and load({}).project_queue_max == 0


def test_running_counts_end_once_whatever_ends_the_job(make_job, redis_conn):
    """Counted running when handed over; uncounted once, by whichever script ends the job first."""
    jobs = _jobs(make_job, "counted", 2)
    mobius_preview.submit_many(jobs)

    def running() -> int:
        return client.queue_stats()["projects"].get("counted", {}).get("running", 0)

    assert running() == 2
    client.cancel(jobs[0]["jobId"])  # waiting on Celery's list: cancelled at once
    assert running() == 1
    records.start(jobs[0]["jobId"], state="running")  # a worker meets it later: skipped, not uncounted again
    assert running() == 1
    records.start(jobs[1]["jobId"], state="running", attempts=1)
    records.retrying(jobs[1]["jobId"], "boom", 1.0)  # still in progress: its retry is queued
    assert running() == 1
    records.bury(jobs[1]["jobId"], {"jobId": jobs[1]["jobId"], "error": "boom"}, error="boom")
    assert running() == 0
    records.bury(jobs[1]["jobId"], {"jobId": jobs[1]["jobId"], "error": "boom"}, error="boom")
    assert running() == 0 and redis_conn.hlen(layout.released_key()) == 0


@pytest.mark.worker
def test_a_cancelled_job_a_worker_drops_unrun_is_uncounted(make_job):
    """Cancelled while waiting its turn, handed over later, revoked by the worker (Celery
    skips it without running the task): it must not keep a place of its project's cap."""

    def running() -> int:
        return client.queue_stats()["projects"].get("revoked", {}).get("running", 0)

    client.pause_project("revoked")
    job = make_job(projectId="revoked")
    mobius_preview.submit(job)
    with start_worker(mobius_preview.app, pool="threads", concurrency=2, perform_ping_check=False,
                      loglevel="WARNING"):
        assert client.cancel(job["jobId"])["state"] == "cancelled"  # the worker hears the revoke
        client.resume_project("revoked")  # handed over now: counted running, until the worker drops it
        wait_for(lambda: running() == 0 and not records.queue_depths()["normal"], timeout=30)
    assert records.get(job["jobId"])["state"] == "cancelled"
