#!/usr/bin/env python3
"""Poll each service's /healthz until all answer 200, or fail after --timeout seconds."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request


def status(host: str, port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument(
        "--host", default="127.0.0.1", help="where the services answer (make cluster: an app host)"
    )
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    pending = list(args.ports)
    last: dict[int, str] = {}
    while pending and time.monotonic() < deadline:
        for port in list(pending):
            code, body = status(args.host, port)
            last[port] = f"{code} {body}"
            if code == 200:
                pending.remove(port)
        if pending:
            time.sleep(0.5)
    for port in pending:
        print(f"{args.host}:{port} not healthy after {args.timeout:.0f}s: {last.get(port)}", file=sys.stderr)
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())
