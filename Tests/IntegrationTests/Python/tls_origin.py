"""An HTTPS origin for the proxy's backend-TLS tests, on Python's ssl module (an implementation
independent of the proxy's). Usage: tls_origin.py CERT KEY [CLIENT_CA]. With CLIENT_CA it
requires a client certificate signed by it (mutual TLS). Prints
`tls_origin: listening on 127.0.0.1:PORT`, then answers every request with JSON: the SNI it
saw, whether the TLS session was resumed, the client certificate's subject, the client's port
(one per connection), the Host header and the request body's length. /health answers 200.
"""
import http.server
import json
import socket
import ssl
import sys

cert, key = sys.argv[1], sys.argv[2]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
if len(sys.argv) > 3:
    context.load_verify_locations(sys.argv[3])
    context.verify_mode = ssl.CERT_REQUIRED

seen_sni = {}


def remember_sni(sock, name, ctx):
    seen_sni[id(sock)] = name


context.sni_callback = remember_sni


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/health":
            payload = b"OK\n"
        else:
            peer = self.connection.getpeercert()
            subject = dict(x[0] for x in peer["subject"]) if peer else None
            payload = json.dumps({
                "sni": seen_sni.get(id(self.connection)),
                "resumed": self.connection.session_reused,
                "version": self.connection.version(),
                "client_cert": subject.get("commonName") if subject else None,
                "client_port": self.client_address[1],
                "host": self.headers.get("Host"),
                "forwarded_proto": self.headers.get("X-Forwarded-Proto"),
                "body_bytes": len(body),
            }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = answer
    do_POST = answer


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
print(f"tls_origin: listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
