"""Events from real processes: a consumer group shared by two readers, and the webhook through an outage."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from .harness import ManagedProcess, free_port, service_command, wait_for

FILES = 12
RECEIVER_DOWN_SECONDS = 5.0  # the 20 s, shortened for CI: the backoff is shortened to match
SECRET = "a shared secret"


def printed(process: ManagedProcess) -> list[dict]:
    return [json.loads(line) for line in process.log_text().splitlines() if line.startswith("{")]


def test_two_readers_of_one_group_see_each_event_once(services, launcher):
    service = services.start()
    env = services.environment()
    readers = [
        launcher.command(f"events-{number}", service_command("events", "--follow", "--group", "g"), env)
        for number in (1, 2)
    ]
    for number in range(FILES):
        service.api.upload("b", f"k{number}", f"content {number}".encode())
    assert service.api.delete("b", "k0").status_code == 200

    def seen() -> list[str]:
        return [event["key"] for reader in readers for event in printed(reader)]

    wait_for(lambda: len(seen()) >= FILES + 1, 30, "both readers to print every event")
    assert sorted(seen()) == sorted([f"k{number}" for number in range(FILES)] + ["k0"])
    whole = subprocess.run(service_command("events"), env=env, capture_output=True, text=True, timeout=60, check=True)
    events = [json.loads(line) for line in whole.stdout.splitlines()]
    assert [event["type"] for event in events] == ["file.created"] * FILES + ["file.deleted"]
    assert events[-1]["key"] == "k0" and events[-1]["digest"] == events[0]["digest"]


def test_followers_outlive_a_redis_restart(services, launcher, own_redis):
    """`events --follow`, alone and in a group, keeps printing after Redis went away and came back empty
    (a restart without persistence: the stream and the group are new)."""
    service = services.start(redis_url=own_redis.url)
    env = services.environment(own_redis.url)
    followers = [
        launcher.command("events-all", service_command("events", "--follow"), env),
        launcher.command("events-group", service_command("events", "--follow", "--group", "g"), env),
    ]
    service.api.upload("b", "before", b"1")
    wait_for(lambda: all(printed(follower) for follower in followers), 30, "both followers to print the event")
    own_redis.kill()
    wait_for(
        lambda: all("trying again" in follower.log_text() for follower in followers),
        60,
        "both followers to find Redis gone",
    )
    own_redis.start()
    wait_for(lambda: service.api.upload("b", "after", b"2"), 30, "an upload once Redis is back", ignore=(Exception,))
    wait_for(
        lambda: all([event["key"] for event in printed(follower)] == ["before", "after"] for follower in followers),
        30,
        "both followers to print the event made after the restart",
    )
    for follower in followers:
        follower.check_alive()


class Receiver:
    """The webhook's receiver: a small HTTP server on a port of 127.0.0.1, started when the test says."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append((body, dict(self.headers)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(free_port())
    try:
        yield receiver
    finally:
        receiver.stop()


def test_the_webhook_receiver_down_for_a_while_then_gets_every_event_once_signed(services, receiver, redis_prefix):
    service = services.start(
        workers=2,
        FILES_WEBHOOK_URL=f"http://127.0.0.1:{receiver.port}/hook",
        FILES_WEBHOOK_SECRET=SECRET,
        FILES_WEBHOOK_RETRY_MIN_SECONDS="0.1",
        FILES_WEBHOOK_RETRY_MAX_SECONDS="1",
    )
    down_since = time.monotonic()
    for number in range(FILES):
        service.api.upload("b", f"k{number}", f"content {number}".encode())
    assert service.api.delete("b", "k1").status_code == 200
    time.sleep(max(0.0, RECEIVER_DOWN_SECONDS - (time.monotonic() - down_since)))  # the outage itself
    receiver.start()

    wait_for(lambda: len(receiver.received) >= FILES + 1, 30, "the receiver to get every event")
    client = redis.Redis.from_url(services.environment()["FILES_REDIS_URL"], decode_responses=True)
    with client:
        wait_for(lambda: client.xpending(f"{redis_prefix}events", "webhooks")["pending"] == 0, 30, "every ack")
        stream_ids = [event_id for event_id, _ in client.xrange(f"{redis_prefix}events")]
    events = []
    for body, headers in receiver.received:
        assert headers["Content-Type"] == "application/json"
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Files-Signature"], expected)
        events.append(json.loads(body))
    assert sorted(event["id"] for event in events) == sorted(stream_ids), "an event lost or sent twice"
    assert sorted((event["type"], event["key"]) for event in events) == sorted(
        [("file.created", f"k{number}") for number in range(FILES)] + [("file.deleted", "k1")]
    )
