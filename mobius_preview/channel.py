"""kombu's Redis channel with two additions: it survives garbage on a queue list, and
it can hand back a message's final Redis commands instead of sending them.

Installed as ``kombu.transport.redis.Transport.Channel`` by ``mobius_preview.app``, so
both the host's processes and the workers use it. It knows nothing of the rest of the
project: the worker tells it what to do with garbage (``on_malformed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

# What to do with an undecodable queue entry: (raw entry, error). Set by the worker.
MalformedHandler = Callable[[str, Exception], None]
# A captured command: ("lpush", prefixed list key, body) or ("publish", prefixed topic, body).
Command = tuple[str, str, str]


class CapturedBatch:
    """A kombu 5.7 publish batch that keeps each command rather than pipelining it.

    ``Producer.batch()`` asks the channel for a batch; kombu routes and serializes each
    message as usual and ends in ``_put``/``_put_fanout``, which add the final command
    ("lpush" onto a queue list, "publish" for an event) to the batch. Keeping those
    lets the client run them inside its accept script: the job record and its message
    are written in one atomic step, or not at all.
    """

    def __init__(self, channel: Channel, sink: list[Command]) -> None:
        self.channel = channel
        self._sink = sink
        self._collecting: list[Command] | None = None

    def publish(self, message: Any, **kwargs: Any) -> Any:
        self._collecting = []
        try:
            result = self.channel.basic_publish(message, _publish_batch=self, **kwargs)
        finally:
            collected, self._collecting = self._collecting, None
        self._sink.extend(collected)
        return result

    def add(self, name: str, *args: Any) -> None:
        if self._collecting is None:
            raise RuntimeError("Redis publish command added outside publication")
        if name not in ("lpush", "publish") or len(args) != 2:
            # e.g. "pexpire" for a queue with x-expires: not something the accept script runs.
            raise RuntimeError(f"cannot capture Redis command {name!r}")
        target, body = args
        body = body.decode("utf-8") if isinstance(body, bytes) else body
        self._collecting.append((name, self.channel.global_keyprefix + str(target), body))

    def flush(self) -> None:
        """Nothing to send: the caller runs what was captured."""

    def discard(self) -> None:
        self._sink.clear()

    def close(self) -> None:
        """No connection of its own to give back."""


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, plus ``capture()`` and a guard around queue reads."""

    _capture_sink: list[Command] | None = None
    _malformed: MalformedHandler | None = None

    @contextmanager
    def capture(self) -> Iterator[list[Command]]:
        """Within this block, ``Producer.batch()`` on this channel captures instead of sending."""
        if self._capture_sink is not None:
            raise RuntimeError("this channel is already capturing")
        sink: list[Command] = []
        self._capture_sink = sink
        try:
            yield sink
        finally:
            self._capture_sink = None

    def create_publish_batch(self, max_size: int) -> Any:
        if self._capture_sink is not None:
            return CapturedBatch(self, self._capture_sink)
        # kombu leaves the method unannotated (and mypy does not apply untyped_calls_exclude to super()).
        return super().create_publish_batch(max_size)  # type: ignore[no-untyped-call]

    def _brpop_read(self, **options: Any) -> Any:
        # kombu decodes each popped entry as JSON; garbage pushed onto the list by
        # another program raises out of the event loop and stops the whole worker
        # ("Unrecoverable error"). With a handler (the worker's: keep it as a dead letter)
        # the entry is handed over and the worker goes on.
        try:
            return super()._brpop_read(**options)  # type: ignore[no-untyped-call]  # kombu's, unannotated
        except ValueError as exc:  # json.JSONDecodeError carries the raw entry in .doc
            handler = Channel._malformed
            if handler is None:
                raise
            handler(getattr(exc, "doc", "") or "", exc)
            return False


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same, on kombu's Sentinel transport (``sentinel://`` URLs)."""


def install() -> None:
    """Make kombu's Redis transports use these channels (every connection made afterwards)."""
    kombu_redis.Transport.Channel = Channel
    kombu_redis.SentinelTransport.Channel = SentinelChannel


def on_malformed(handler: MalformedHandler) -> None:
    """Hand queue entries that are not JSON to ``handler`` instead of stopping the consumer."""
    Channel._malformed = staticmethod(handler)
