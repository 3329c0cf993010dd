"""The leaf package: small utilities every layer uses, importing nothing of the project.

tasks (background tasks that stop), lifecycle (a worker's closers and drainers),
metrics (the Prometheus series), client_ip (who the visitor is), singleflight
(one load per key), process (dying with the parent). See README's "How it is built".
"""
