"""An HTTPS server for the JWKS-from-a-URL tests, on Python's ssl module. Usage:
jwks_server.py CERT KEY FILE. Every GET answers FILE's contents as they are now (so a test
rotates the keys by rewriting the file), with Content-Length, or chunked for a path that starts
with /chunked; a path that starts with /slow waits 10 s first. Prints
`jwks_server: listening on 127.0.0.1:PORT`, then `jwks_server: fetch N PATH` for each request.
"""
import http.server
import ssl
import sys
import threading
import time

cert, key, served = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
count = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        global count
        with lock:
            count += 1
            print(f"jwks_server: fetch {count} {self.path}", flush=True)
        if self.path.startswith("/slow"):
            time.sleep(10)
        with open(served, "rb") as f:
            payload = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(payload) // 2
            for part in (payload[:half], payload[half:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, address = self.socket.accept()
        try:
            return context.wrap_socket(sock, server_side=True), address
        except (ssl.SSLError, OSError):
            sock.close()
            raise

    def handle_error(self, request, client_address):
        pass


server = Server(("127.0.0.1", 0), Handler)
print(f"jwks_server: listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
