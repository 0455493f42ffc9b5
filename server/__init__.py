"""The scoring server: repository -> runtimes -> batcher -> gRPC services."""
