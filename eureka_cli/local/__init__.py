"""`eureka up`: Redis and every service as local processes on 127.0.0.1."""
