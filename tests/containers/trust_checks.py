"""Run inside a container: does Python's ssl (the default context, X509-strict on 3.13) accept
the leaf LEAF for tls.test with the trust file or folder given? One TLS handshake, in memory
(two MemoryBIOs, no socket). Prints `OK <how>` or `FAIL <how>: <error>`; exit 0 / 1.

    python3 trust_checks.py LEAF KEY cafile|capath PATH
"""

import ssl
import sys

MAX_ROUNDS = 20


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname="tls.test")
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"cli": False, "srv": False}
    for _ in range(MAX_ROUNDS):
        for name, end in (("cli", cli), ("srv", srv)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise RuntimeError(f"no handshake after {MAX_ROUNDS} rounds")


def main() -> int:
    leaf, key, how, path = sys.argv[1:5]
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(leaf, key)
    client = ssl.create_default_context(**{how: path})
    strict = bool(client.verify_flags & ssl.VERIFY_X509_STRICT)
    try:
        handshake(client, server)
    except (ssl.SSLError, RuntimeError) as exc:
        print(f"FAIL {how} {path} (x509_strict={strict}): {exc}")
        return 1
    print(f"OK {how} {path} (x509_strict={strict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
