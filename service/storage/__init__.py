"""Storage on a local (or shared) filesystem: durable writes, staging files, blobs and entries."""
