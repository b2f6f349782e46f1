"""Run a moto S3 server on 127.0.0.1 until stdin closes: ``python -m benchmarks._moto``.

Prints its endpoint as the first line of stdout. Request logging is off: writing a
log line per request would spend the server's CPU on the benchmark's behalf.
"""

from __future__ import annotations

import logging
import sys

from moto.server import ThreadedMotoServer


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    try:
        sys.stdin.read()  # returns at EOF: the parent closed our stdin or died
    finally:
        server.stop()


if __name__ == "__main__":
    main()
