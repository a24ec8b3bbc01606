"""GET a URL with urllib, requests or httpx; print `status=N` and the body, or `error=...`.

    python3 client.py urllib|requests|httpx URL
Each library as an application uses it: no verify, proxy or CA arguments, only the environment.
"""

import sys


def fetch(kind: str, url: str) -> tuple[int, str]:
    if kind == "urllib":
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=20) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
    if kind == "requests":
        import requests

        r = requests.get(url, timeout=20)
        return r.status_code, r.text
    if kind == "httpx":
        import httpx

        r = httpx.get(url, timeout=20)
        return r.status_code, r.text
    raise SystemExit(f"unknown client {kind!r}")


def main() -> None:
    kind, url = sys.argv[1:3]
    try:
        status, body = fetch(kind, url)
    except Exception as e:
        print("error=" + f"{type(e).__name__}: {e!r}".replace("\n", " "))
        return
    print(f"status={status}")
    print(body)


main()
