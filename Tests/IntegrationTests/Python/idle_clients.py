"""Opens N keep-alive connections to 127.0.0.1:PORT, each having sent one request and read its
answer, then holds them open (at most 60 s) until killed. Prints a line the test harness waits
for once they all are open. The connections live in this process, not in the test process, so
the tests' own descriptor table stays small."""
import resource
import socket
import sys
import time

port, count = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < count + 100:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
held = []
deadline = time.monotonic() + 30
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /idle/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
    got = b""
    while b"\r\n\r\n" not in got or not got.startswith(b"HTTP/1.1 200"):
        chunk = s.recv(65536)
        if not chunk or time.monotonic() > deadline:
            print("connection %d: no 200: %r" % (i, got[:80]), flush=True)
            sys.exit(1)
        got += chunk
    held.append(s)
print("%d idle keep-alive connections open; listening on 127.0.0.1:%d" % (len(held), port), flush=True)
time.sleep(60)
