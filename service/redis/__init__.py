"""State in Redis: the connection, the key space, leases, upload sessions and the listing index."""
