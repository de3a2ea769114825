#!/usr/bin/env python3
"""Stop, all at once, the programs whose configuration changed (before `supervisorctl update`).

`supervisorctl update` stops changed programs one after the other; with a dozen programs
that is most of the time `make up` takes after a setting changed. This asks supervisord
(XML-RPC on its unix socket) to stop them together, then waits until they are down.
"""

from __future__ import annotations

import sys
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport


def main(socket_path: str) -> int:
    transport = SupervisorTransport(None, None, f"unix://{socket_path}")
    server = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    [[_added, changed, removed]] = server.supervisor.reloadConfig()
    groups = [name for name in changed + removed if name != "rabbitmq"]
    for group in groups:
        server.supervisor.stopProcessGroup(group, False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [
            p
            for p in server.supervisor.getAllProcessInfo()
            if p["group"] in groups and p["statename"] in ("RUNNING", "STARTING", "STOPPING")
        ]
        if not running:
            break
        time.sleep(0.2)
    if groups:
        print(f"stopped {len(groups)} changed program(s): {', '.join(sorted(groups))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
