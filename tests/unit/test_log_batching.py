"""Log lines are written in batches, warnings at once, and none is lost or reordered."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time

from common.observability.logs import BatchingStreamHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def logger_with(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(name)
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_info_lines_arrive_in_one_write_in_order():
    stream = CountingStream()
    # A long delay: the batch cannot be written before all lines are in.
    log = logger_with(BatchingStreamHandler(stream, delay=1.0), "batching.info")
    for i in range(50):
        log.info("line %d", i)
    wait_for(lambda: stream.getvalue().count("\n") == 50)
    assert stream.getvalue().splitlines() == [f"INFO line {i}" for i in range(50)]
    assert stream.writes == 1


def test_a_warning_is_written_at_once_after_the_lines_before_it():
    stream = CountingStream()
    log = logger_with(BatchingStreamHandler(stream, delay=60), "batching.warning")
    log.info("before")
    log.warning("now")
    # No waiting: the warning was written in the caller's thread, with the info line first.
    assert stream.getvalue().splitlines() == ["INFO before", "WARNING now"]
    log.info("after")
    assert stream.getvalue().splitlines() == ["INFO before", "WARNING now"]
    log.handlers[0].flush()
    assert stream.getvalue().splitlines() == ["INFO before", "WARNING now", "INFO after"]


def test_no_line_is_lost_from_many_threads():
    stream = io.StringIO()
    log = logger_with(BatchingStreamHandler(stream, delay=0.01), "batching.threads")

    def work(n: int) -> None:
        for i in range(200):
            (log.warning if i % 50 == 0 else log.info)("t%d-%d", n, i)
            if i % 20 == 0:
                time.sleep(0.002)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: stream.getvalue().count("\n") == 800)
    lines = stream.getvalue().splitlines()
    assert sorted(line.split()[1] for line in lines) == sorted(
        f"t{n}-{i}" for n in range(4) for i in range(200)
    )
    for n in range(4):  # each thread's lines in its own order
        mine = [int(line.split("-")[1]) for line in lines if line.split()[1].startswith(f"t{n}-")]
        assert mine == list(range(200))


def test_pending_lines_are_written_at_exit():
    """logging.shutdown (atexit) flushes: a short-lived command loses nothing."""
    script = (
        "import logging, sys\n"
        "from common.observability.logs import BatchingStreamHandler\n"
        "handler = BatchingStreamHandler(sys.stdout, delay=60)\n"
        "logging.basicConfig(level=logging.INFO, handlers=[handler], format='%(message)s')\n"
        "for i in range(3): logging.info('bye %d', i)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == ["bye 0", "bye 1", "bye 2"]


def test_a_forked_child_does_not_repeat_its_parents_pending_lines():
    read_end, write_end = os.pipe()
    stream = io.StringIO()
    log = logger_with(BatchingStreamHandler(stream, delay=60), "batching.fork")
    log.info("parent's")
    pid = os.fork()
    if pid == 0:  # the child: its handler must start empty, and still work
        try:
            log.info("child's")
            log.handlers[0].flush()
            os.write(write_end, stream.getvalue().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as child:
        assert child.read().splitlines() == ["INFO child's"]
    log.handlers[0].flush()
    assert stream.getvalue().splitlines() == ["INFO parent's"]
