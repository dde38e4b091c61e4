"""A failover loses the index changes the old master acknowledged last: the service catches them up.

Replication is asynchronous. Here the replica is cut off on purpose (it can no longer authenticate to its
primary), so a whole upload is acknowledged by the primary alone; then the primary is killed and the
Sentinels promote the replica, which lacks that file's index change. The file is on the volume (the
truth): it must be listed again, by the catch-up that follows the failover, with no rebuild asked for.
"""

from __future__ import annotations

import contextlib

from service.redis.keyspace import KeySpace

from .harness import Launcher, RedisServer, SentinelServer, wait_for

MASTER = "files-test"


def test_a_file_the_failover_lost_from_the_index_is_listed_again(launcher: Launcher, services, redis_prefix) -> None:
    primary = launcher.redis()
    replica = launcher.redis(replica_of=primary.port)
    sentinels = [launcher.sentinel(MASTER, primary.port, quorum=2) for _ in range(3)]
    wait_for(lambda: all(sentinel.sees(3, replicas=1) for sentinel in sentinels), 30, "the Sentinels to know all")
    addresses = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
    service = services.start(redis_url=f"redis+sentinel://{addresses}/{MASTER}/0")
    api = service.api

    api.upload("kept", "before", b"replicated before the failover")
    # The start's rebuild is caught up on (else its catch-up would list the file anyway), a sweep has noted
    # the master's replication id, and the replica holds all that and the first file.
    wait_for(lambda: caught_up_with(primary, replica, redis_prefix), 30, "the replica to hold a complete index")

    cut_off(primary, replica)
    api.upload("kept", "after", b"acknowledged by the old primary only")
    with contextlib.closing(primary.client()) as client, contextlib.closing(replica.client()) as copy:
        assert copy.info("replication")["master_repl_offset"] < client.info("replication")["master_repl_offset"]
    primary.kill()
    wait_for(lambda: promoted(sentinels, replica.port), 30, "the Sentinels to promote the replica")

    wait_for(lambda: listed(service.api.files("kept")) == ["after", "before"], 60, "every file to be listed")
    assert service.api.content("kept", "after").content == b"acknowledged by the old primary only"
    service.check_alive()


def test_a_cluster_primary_failover_is_caught_up_the_same_way(launcher: Launcher, services, redis_prefix) -> None:
    cluster = launcher.cluster(primaries=3)
    service = services.start(redis_url=cluster.url)
    service.api.upload("kept", "before", b"replicated before the failover")
    keys = KeySpace(redis_prefix)
    with contextlib.closing(cluster.client()) as client:
        port = client.get_node_from_key(keys.bucket_entries("kept")).port
        index = client.get_node_from_key(keys.replication).port
    primary = next(node for node in cluster.nodes if node.port == port)  # the bucket's primary
    replica = cluster.replica_of(primary)
    index_node = next(node for node in cluster.nodes if node.port == index)
    wait_for(lambda: noted(index_node, redis_prefix), 30, "a sweep to note the primaries' replication ids")
    wait_for(lambda: caught_up_with(primary, replica, None), 30, "the bucket's replica to hold a copy")

    cut_off(primary, replica)
    service.api.upload("kept", "after", b"acknowledged by the old primary only")
    primary.kill()
    wait_for(lambda: cluster.roles()[replica.port][0] == "master", 60, "the replica to take over")
    wait_for(cluster.healthy, 60, "every slot served again")

    wait_for(lambda: listed(service.api.files("kept")) == ["after", "before"], 60, "every file to be listed")
    assert service.api.content("kept", "after").content == b"acknowledged by the old primary only"
    service.check_alive()


def noted(node: RedisServer, prefix: str) -> bool:
    with contextlib.closing(node.client()) as client:
        return bool(client.exists(f"{prefix}index:replication:{{index}}")) and not client.exists(
            f"{prefix}index:rebuilds:{{index}}"
        )


def caught_up_with(primary: RedisServer, replica: RedisServer, prefix: str | None) -> bool:
    """The replica holds all its primary wrote; with `prefix`, that includes a caught-up index's note."""
    with contextlib.closing(primary.client()) as client:
        offset = client.info("replication")["master_repl_offset"]
    if prefix is not None and not noted(replica, prefix):
        return False
    with contextlib.closing(replica.client()) as copy:
        return bool(copy.info("replication")["master_repl_offset"] == offset)


def cut_off(primary: RedisServer, replica: RedisServer) -> None:
    """Drop the replica's link so that it cannot come back: it now logs in as a user its primary lacks."""
    with contextlib.closing(replica.client()) as copy:
        copy.config_set("masteruser", "nobody")
        copy.config_set("masterauth", "wrong")
    with contextlib.closing(primary.client()) as client:
        client.client_kill_filter(_type="replica")
    wait_for(lambda: link_down(replica), 30, "the replica's link to go down")


def link_down(replica: RedisServer) -> bool:
    with contextlib.closing(replica.client()) as copy:
        return copy.info("replication")["master_link_status"] == "down"


def listed(files: list[dict]) -> list[str]:
    return sorted(entry["key"] for entry in files)


def promoted(sentinels: list[SentinelServer], port: int) -> bool:
    return all(sentinel.master_port() == port for sentinel in sentinels)
