"""Client run inside the pod's network namespace (executor image, python3 stdlib only).

python3 pod_client.py connect HOST PORT [--cafile F]   -> JSON: CONNECT status, headers, TLS
python3 pod_client.py get URL                           -> JSON: status, body (no proxy)
"""

import argparse
import json
import socket
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, rest


def connect(args):
    out: dict[str, Any] = {"status": None, "headers": {}, "tls": None}
    sock = socket.create_connection((args.proxy_host, args.proxy_port), timeout=10)
    target = f"{args.host}:{args.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    out["status"], out["headers"], _ = read_head(sock)
    if out["status"] == 200 and args.cafile:
        ctx = ssl.create_default_context(cafile=args.cafile)
        try:
            tls = ctx.wrap_socket(sock, server_hostname=args.host)
            cert: Any = tls.getpeercert() or {}
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
            status, _, body = read_head(tls)
            out["tls"] = {
                "verified": True,
                "issuer": dict(x[0] for x in cert["issuer"]),
                "san": [v for _, v in cert.get("subjectAltName", ())],
                "http_status": status,
                "body": body.decode("latin-1")[:200],
            }
        except (ssl.SSLError, OSError) as exc:
            out["tls"] = {"verified": False, "error": repr(exc)}
    sock.close()
    print(json.dumps(out))


def get(args):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(args.url, timeout=5) as response:
            print(json.dumps({"status": response.status, "body": response.read().decode()}))
    except urllib.error.HTTPError as exc:
        print(json.dumps({"status": exc.code, "body": exc.read().decode()}))
    except OSError as exc:
        print(json.dumps({"status": None, "body": repr(exc)}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--cafile")
    c.add_argument("--proxy-host", default="127.0.0.1")
    c.add_argument("--proxy-port", type=int, default=8080)
    g = sub.add_parser("get")
    g.add_argument("url")
    args = parser.parse_args()
    {"connect": connect, "get": get}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
