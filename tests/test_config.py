"""Settings: defaults, validation with one clear line, and start-up refusal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mobius_preview import layout
from mobius_preview.config import load, mask_url
from mobius_preview.errors import ConfigError


def test_defaults():
    s = load({})
    assert s.queue_name == "preview" and s.concurrency == 2 and s.max_tries == 5
    assert s.retry_backoff == 1
    assert layout.queues(s) == ["preview.high", "preview.normal", "preview.low"]
    assert layout.dead_key(s) == "preview.dead"
    # The visibility timeout outlasts the longest render and the longest retry delay.
    assert s.visibility_timeout > s.time_limit and s.visibility_timeout > s.retry_backoff_max


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PREVIEW_WORKER_CONCURRENCY": "two"},
         "PREVIEW_WORKER_CONCURRENCY: must be an integer, got 'two'"),
        ({"PREVIEW_WORKER_CONCURRENCY": "0"}, "PREVIEW_WORKER_CONCURRENCY: must be >= 1, got 0"),
        ({"PREVIEW_QUEUE_MAX": "-5"}, "PREVIEW_QUEUE_MAX: must be >= 1"),
        ({"REDIS_URL": "http://example"}, "REDIS_URL: scheme must be one of"),
        ({"REDIS_URL": "redis://:secret@host:notaport/0"}, "REDIS_URL: bad port in 'redis://:***@host"),
        ({"REDIS_URL": "redis://localhost/zero"}, "REDIS_URL: database must be a number"),
        ({"PREVIEW_QUEUE_NAME": "a b"}, "PREVIEW_QUEUE_NAME"),
        ({"PREVIEW_SOFT_TIME_LIMIT": "100", "PREVIEW_TIME_LIMIT": "50"}, "PREVIEW_TIME_LIMIT: must exceed"),
        ({"PREVIEW_VISIBILITY_TIMEOUT": "10"}, "PREVIEW_VISIBILITY_TIMEOUT: must be >="),
        ({"FFMPEG_BINARY": "/nonexistent/ffmpeg"},
         "FFMPEG_BINARY: '/nonexistent/ffmpeg' is not an executable"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT: must be a TCP port"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError) as caught:
        load(env)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert "secret" not in text


def test_passwords_are_masked():
    assert mask_url("redis://user:hunter2@redis.internal:6380/1") == "redis://user:***@redis.internal:6380/1"
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def _worker(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv[0]='celery'; from celery.__main__ import main; main()",
         "-A", "mobius_preview", "worker", "--pool=solo"],
        env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.worker  # a `celery worker` process, refusing to start
def test_worker_refuses_to_start_on_a_bad_setting():
    proc = _worker({"PREVIEW_WORKER_CONCURRENCY": "lots"})
    assert proc.returncode != 0
    assert "configuration error: PREVIEW_WORKER_CONCURRENCY: must be an integer, got 'lots'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.worker
def test_worker_refuses_to_start_on_an_unreachable_broker():
    proc = _worker({"REDIS_URL": "redis://:pw@127.0.0.1:1/0"})
    assert proc.returncode != 0
    assert "REDIS_URL: cannot reach redis://:***@127.0.0.1:1/0" in proc.stderr + proc.stdout
    assert ":pw@" not in proc.stderr + proc.stdout


def test_cli_reports_a_bad_setting_in_one_line():
    import os

    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "mobius-preview"), "queues"],
        env={**os.environ, "PREVIEW_QUEUE_MAX": "many"}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "mobius-preview: configuration error: PREVIEW_QUEUE_MAX: must be an integer, got 'many'"
    )


def test_transport_options_reach_kombus_channel():
    """kombu silently ignores an option it does not know: check the channel has ours."""
    from mobius_preview import app
    from mobius_preview.config import settings

    with app.connection_for_read() as conn:
        channel = conn.default_channel
        assert channel.visibility_timeout == settings().visibility_timeout
        assert channel.unacked_restore_throttle == 1
        # A worker killed mid-restore holds kombu's restore lock; it expires in 30 s, not 300.
        assert channel.qos.unacked_mutex_expire == 30
        assert type(channel).__module__ == "mobius_preview.channel"
