#!/usr/bin/env python3
"""Writes the checked-in seed corpora under fuzz/seeds/<target>/.

Run from anywhere: python3 fuzz/seeds/make_seeds.py. Deterministic; no
third-party modules (CheckRequests are protobuf-encoded by hand below).
Seeds are starting points only: tokens in them are not signed by the keys a
fuzz process generates, so none of them validates.
"""
import base64
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(header, claims, sig=b"\x01" * 256):
    return ".".join([b64(json.dumps(header)), b64(json.dumps(claims)), b64(sig)])


ISS = "https://sso.example.test/realms/acme"
CLAIMS = {
    "exp": 1767225900, "iat": 1767225600, "iss": ISS, "aud": ["orders-api", "account"],
    "sub": "6f1c2c4e-3b0a-4c8e-9a57-4d2f1a9e0a11", "typ": "Bearer", "azp": "web-frontend",
    "realm_access": {"roles": ["orders-reader"]},
    "resource_access": {"orders-api": {"roles": ["orders-writer"]}},
    "scope": "openid profile orders:read", "preferred_username": "alice",
}
TOKENS = [
    jwt({"alg": "RS256", "typ": "JWT", "kid": "k1"}, CLAIMS),
    jwt({"alg": "none"}, CLAIMS, b""),
    jwt({"alg": "HS256", "kid": "k1"}, CLAIMS, b"\x00" * 32),
    jwt({"alg": "RS256", "kid": "k1", "crit": ["exp"]}, CLAIMS),
    jwt({"alg": "ES256", "kid": "k1", "jku": "https://evil.test/jwks"}, dict(CLAIMS, typ="ID")),
]


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf, by hand ---
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(tag, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def map_entry(tag, k, v):
    return field(tag, field(1, k) + field(2, v))


def check_request(method="GET", host="api.example.test", path="/", headers=(), raw=None,
                  principal=None, context=()):
    http = field(2, method) + field(4, path) + field(5, host)
    for k, v in headers:
        http += map_entry(3, k, v)
    if raw is not None:
        hm = b"".join(field(1, field(1, k) + field(3, v)) for k, v in raw)
        http += field(13, hm)
    attrs = b""
    if principal is not None:
        attrs += field(1, field(4, principal))
    attrs += field(4, field(2, http))
    for k, v in context:
        attrs += map_entry(10, k, v)
    return field(1, attrs)


def main():
    for t in ["path_normalize", "token_validate", "jwks_parse", "config_parse", "check_request"]:
        shutil.rmtree(os.path.join(HERE, t), ignore_errors=True)

    paths = [
        "/", "/orders/1", "/orders/1?expand=items#x", "/a//b///c/", "/a/./b/../c", "/../..",
        "/%61dmin", "/admin%2fusers", "/admin%5Cusers", "/admin\\users", "/%2e%2e/admin",
        "/docs/..;/admin", "/admin;jsessionid=1/users", "/a%zz", "/a%0a", "/caf\u00e9/%C3%A9",
        "/v1/shop/items/1/2", "*", "orders", "/a/%2E/b", "/%252F",
    ]
    for i, p in enumerate(paths):
        write("path_normalize", f"path-{i:02}", p)

    # token_validate: mode byte, clock byte, data.
    for i, t in enumerate(TOKENS):
        write("token_validate", f"raw-{i}", b"\x00\x00" + t.encode())
    write("token_validate", "header", b"\x01\x00" + b'{"alg":"RS256","kid":"x","typ":"JWT"}')
    write("token_validate", "payload", b"\x02\x00" + json.dumps(CLAIMS).encode())
    write("token_validate", "append", b"\x03\x00.x")
    write("token_validate", "signature", b"\x04\x00" + b"\x00" * 256)

    rsa = {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
           "n": b64(b"\xc3" + b"\x11" * 255), "e": "AQAB"}
    keys = [
        rsa,
        dict(rsa, kid="enc", use="enc", alg="RSA-OAEP"),
        {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(b"\x02" * 32), "y": b64(b"\x03" * 32)},
        {"kty": "OKP", "kid": "o1", "crv": "Ed25519", "x": b64(b"\x04" * 32)},
        {"kty": "oct", "kid": "h1", "k": b64(b"secret")},
        dict(rsa, kid="k1", alg="PS256"),
        {"kty": "RSA", "kid": "bad", "n": "!!", "e": ""},
    ]
    write("jwks_parse", "keycloak", b"\x00" + json.dumps({"keys": keys}).encode())
    write("jwks_parse", "empty", b"\x00" + b'{"keys":[]}')
    write("jwks_parse", "one-more-key", b"\x80" + json.dumps(keys[2]).encode())

    for name in ["demo.yaml", "portcullis.yaml"]:
        src = os.path.join(ROOT, "config", name)
        if os.path.exists(src):
            with open(src, "rb") as f:
                write("config_parse", name, f.read())
    lib = open(os.path.join(ROOT, "fuzz", "src", "lib.rs")).read()
    start = lib.index('CHECK_CONFIG: &str = r#"') + len('CHECK_CONFIG: &str = r#"')
    write("config_parse", "fuzz-check.yaml", lib[start:lib.index('"#;', start)])

    reqs = {
        "public": check_request(path="/healthz"),
        "bearer": check_request(path="/orders/1", headers=[("authorization", "Bearer " + TOKENS[0])]),
        "raw-headers": check_request(method="post", path="/orders", raw=[
            ("authorization", "Bearer " + TOKENS[1]), ("x-portcullis-subject", "forged")]),
        "twice": check_request(path="/me", raw=[("authorization", "Bearer a.b.c"),
                                                ("Authorization", "Bearer d.e.f")]),
        "ambiguous": check_request(path="/docs/..%2Fadmin", host="API.Example.Test."),
        "mtls": check_request(path="/internal/x",
                              principal="spiffe://cluster.local/ns/shop/sa/cart"),
        "context": check_request(path="/anything", context=[("policy", "orders")]),
        "tcp": field(1, field(1, field(4, "spiffe://cluster.local/ns/shop/sa/db"))),
    }
    for name, data in reqs.items():
        write("check_request", name, data)


if __name__ == "__main__":
    main()
