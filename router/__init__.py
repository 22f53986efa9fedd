"""The Tandem router: a grpc.aio front end that validates requests and streams them
through a ``Backend`` (the Ray pools, or one local engine). Holds no model weights."""
