"""A small authoritative DNS server for the proxy's re-resolution tests, on PyPI's dnslib (an
implementation independent of c-ares). Usage: dns_server.py RECORDS_JSON

Listens on UDP 127.0.0.1 (a free port) and prints `dns_server: listening on 127.0.0.1:PORT`.
Each query re-reads RECORDS_JSON, so a test changes the answers mid-run by rewriting it:
  {"ttl": 1, "mode": "ok", "names": {"app.test": ["127.0.0.1", "127.0.0.2"]}}
mode "ok" answers A/AAAA records from "names" (NXDOMAIN for other names), "servfail" answers
SERVFAIL to everything, "silent" does not answer at all. Every query is counted in the file
RECORDS_JSON + ".queries" (one line per query: the name asked).
"""
import json
import socket
import sys

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord

records_path = sys.argv[1]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(f"dns_server: listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)

while True:
    data, peer = sock.recvfrom(4096)
    try:
        query = DNSRecord.parse(data)
    except Exception:
        continue
    try:
        with open(records_path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        spec = {"mode": "servfail"}
    name = str(query.q.qname).rstrip(".").lower()
    with open(records_path + ".queries", "a") as f:
        f.write(name + "\n")
    mode = spec.get("mode", "ok")
    if mode == "silent":
        continue
    reply = query.reply()
    if mode == "servfail":
        reply.header.rcode = RCODE.SERVFAIL
    elif name not in spec.get("names", {}):
        reply.header.rcode = RCODE.NXDOMAIN
    else:
        ttl = int(spec.get("ttl", 1))
        for address in spec["names"][name]:
            if ":" in address and query.q.qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(query.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=ttl))
            elif ":" not in address and query.q.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
    sock.sendto(reply.pack(), peer)
