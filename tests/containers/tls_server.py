"""A tiny HTTPS file server for the container tests (python3 stdlib only).

python3 tls_server.py --cert C --key K --port 8443 --dir D
"""

import argparse
import functools
import http.server
import ssl

parser = argparse.ArgumentParser()
parser.add_argument("--cert", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8443)
parser.add_argument("--dir", required=True)
args = parser.parse_args()

handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=args.dir)
server = http.server.ThreadingHTTPServer((args.host, args.port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"serving {args.dir} on https://{args.host}:{args.port}", flush=True)
server.serve_forever()
