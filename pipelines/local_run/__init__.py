"""Local-run tooling: what lets the pipeline run on this machine without Docker or Beam's own downloads.

``jars`` fetches the Java pieces (Kafka expansion service, Flink job server) from Maven Central into ``.cache/``,
``boot`` starts SDK workers for a runner's PROCESS environment, ``install_once`` builds or downloads a cached
artifact exactly once under a file lock. Nothing here builds the pipeline.
"""
