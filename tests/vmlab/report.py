"""A report server on 127.0.0.1 for ``rtk.report=``: records every POSTed JSON body
(the guest reaches it at 10.0.2.2)."""

from __future__ import annotations

import http.server
import json
import threading


class ReportServer:
    """Records every POST body; answers 503 to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0):
        self.bodies: list[dict] = []
        self.raw: list[bytes] = []
        self.requests = 0
        self.fail_first = fail_first
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                if server.requests <= server.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                server.raw.append(data)
                server.bodies.append(json.loads(data))
                self.send_response(204)
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/report"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url_for(self, host: str = "127.0.0.1") -> str:
        return self.url.replace("127.0.0.1", host)

    def events(self) -> list[str]:
        return [b["event"] for b in self.bodies]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
