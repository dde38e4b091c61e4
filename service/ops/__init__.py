"""Operating the service: the background sweep, fsck, metrics, logs and process tuning."""
