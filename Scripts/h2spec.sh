#!/usr/bin/env bash
# h2spec against the proxy, over TLS (ALPN h2) and over h2c (prior knowledge), each in front of
# the bundled test backend. `make h2spec`.
#   Scripts/h2spec.sh BINDIR [H2SPEC_BINARY] [H2SPEC_SOURCE_CHECKOUT]
set -euo pipefail
BIN=$1; H2SPEC=${2:-}; SRC=${3:-}
WORK=$(mktemp -d /tmp/h2spec-run.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
if [ -z "$H2SPEC" ]; then
    if command -v h2spec >/dev/null 2>&1; then H2SPEC=$(command -v h2spec)
    elif [ -n "$SRC" ]; then
        SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
        dpkg -s golang-go golang-github-spf13-cobra-dev golang-golang-x-net-dev golang-github-fatih-color-dev >/dev/null 2>&1 || \
            { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq golang-go golang-github-spf13-cobra-dev golang-golang-x-net-dev golang-github-fatih-color-dev >/dev/null; }
        mkdir -p "$WORK/go/src/github.com/summerwind"
        cp -r "$SRC" "$WORK/go/src/github.com/summerwind/h2spec"
        (cd "$WORK/go/src/github.com/summerwind/h2spec" && GO111MODULE=off GOPATH="$WORK/go:/usr/share/gocode" go build -o "$WORK/h2spec" ./cmd/h2spec)
        H2SPEC=$WORK/h2spec
    else
        echo "h2spec: set H2SPEC=/path/to/h2spec or H2SPEC_SRC=/path/to/summerwind/h2spec (a checkout)" >&2; exit 2
    fi
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port); H2C=$(free_port); TLS=$(free_port)
"$BIN/test-backend" "$BACKEND" >/dev/null 2>&1 &
cat > "$WORK/config.json" <<JSON
{"listen":["127.0.0.1:$H2C",{"address":"127.0.0.1:$TLS","tls":{"certificates":[{"cert":"$WORK/cert.pem","key":"$WORK/key.pem"}]}}],
 "backends":[{"url":"http://127.0.0.1:$BACKEND"}],"workers":1,"access_log":null}
JSON
"$BIN/proxy" --config "$WORK/config.json" >"$WORK/proxy.log" 2>&1 &
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$H2C/_health" && break; sleep 0.1; done
echo "== h2spec over TLS (ALPN h2)"
"$H2SPEC" -h 127.0.0.1 -p "$TLS" -t -k -o 3 | tail -3
echo "== h2spec over h2c (prior knowledge, on a port shared with HTTP/1)"
"$H2SPEC" -h 127.0.0.1 -p "$H2C" -o 3 | grep -E "×|tests," | sort -u || true
