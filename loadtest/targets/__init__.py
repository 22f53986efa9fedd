"""Load-test targets: Tandem over gRPC, OpenAI-compatible over HTTP."""
