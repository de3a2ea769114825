"""gunicorn settings shared by the four web processes (the rest is on the command line)."""

import os


def child_exit(server, worker) -> None:
    """Drop a dead web worker's live gauges from the multiprocess metrics directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
