#!/bin/bash
# Run inside the executor image, through its entrypoint: start an HTTPS server whose certificate
# the proxy CA issued, then let every client talk to it without any flag. One line per check:
#   RESULT <name> <exit code>
set -uo pipefail
url=https://tls.test:8443
mkdir -p /tmp/www && echo hello > /tmp/www/hello.txt
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t HOME=/tmp
git init -q -b main /tmp/work && git -C /tmp/work commit -q --allow-empty -m init
git clone -q --bare /tmp/work /tmp/www/repo.git && git -C /tmp/www/repo.git update-server-info
python3 /t/tls_server.py --cert /srv-tls/server.crt --key /srv-tls/server.key --dir /tmp/www \
    >/tmp/server.log 2>&1 &
for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break
    sleep 0.1
done
check() {
    local name=$1
    shift
    echo "--- $name: $*"
    timeout 20 "$@" 2>&1
    echo "RESULT $name $?"
}
echo "ENV SSL_CERT_FILE=${SSL_CERT_FILE:-} NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-} PIP_CERT=${PIP_CERT:-}"
check curl curl -fsS "$url/hello.txt"
check urllib python3 -c "import urllib.request as u; print(u.urlopen('$url/hello.txt').read())"
check requests python3 -c "import requests; r = requests.get('$url/hello.txt'); r.raise_for_status(); print(r.text)"
check ssl python3 -c "import socket, ssl; ssl.create_default_context().wrap_socket(socket.create_connection(('tls.test', 8443)), server_hostname='tls.test').close(); print('ok')"
check git git ls-remote "$url/repo.git"
check node node -e "require('https').get('$url/hello.txt', r => { console.log(r.statusCode); process.exit(r.statusCode === 200 ? 0 : 1) }).on('error', e => { console.error(e.message); process.exit(1) })"
check openssl bash -c "openssl s_client -connect 127.0.0.1:8443 -servername tls.test -verify_hostname tls.test -verify_return_error </dev/null 2>&1 | grep -E 'Verify return code: 0 '"
