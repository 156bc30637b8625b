"""Code shared by the Eureka services: configuration, logging, metrics, gRPC plumbing, model I/O."""
