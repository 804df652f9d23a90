"""The demo's Alertmanager receiver: every webhook notification, one line each, in a file.

prometheus/alertmanager.yml sends every receiver's notifications to
http://127.0.0.1:5001/alerts/<receiver>; nothing listens there until a site wires its
pager, so the demo listens instead and writes what a pager would have received.
Usage: python3 scripts/notification_sink.py LOG_FILE [PORT]
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    """Serve until killed."""
    log = Path(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 5001

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                note = json.loads(body)
                alerts = note.get("alerts", [])
                line = (
                    f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} "
                    f"to={self.path.rsplit('/', 1)[-1]} status={note.get('status')} "
                    + "; ".join(
                        " ".join(
                            f"{k}={v}"
                            for k, v in a.get("labels", {}).items()
                            if k in ("alertname", "severity", "facility", "region", "product")
                        )
                        + f" runbook={a.get('annotations', {}).get('runbook_url', '-')}"
                        for a in alerts
                    )
                )
            except (ValueError, AttributeError):
                line = f"unreadable notification: {body[:200]!r}"
            with log.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # the log file is the output

    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()


if __name__ == "__main__":
    main()
