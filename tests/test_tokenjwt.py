"""JWTTokenApi with real JWTs made by jwcrypto: signed (RSA PEM, HS256) and encrypted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import echo_once, refused_start, upgrade_status
from jwcrypto import jwk, jwt
from jwcrypto.common import base64url_encode

RSA_KEY = jwk.JWK.generate(kty="RSA", size=2048)
OCT_KEY = jwk.JWK.generate(kty="oct", size=256)


def signed(key: jwk.JWK, claims: dict[str, object], alg: str) -> str:
    token = jwt.JWT(header={"alg": alg}, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


def encrypted(key: jwk.JWK, payload: str | dict[str, object], alg: str) -> str:
    token = jwt.JWT(header={"alg": alg, "enc": "A256CBC-HS512"}, claims=payload)
    token.make_encrypted_token(key)
    return token.serialize()


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    pem = folder / "private.pem"
    pem.write_bytes(RSA_KEY.export_to_pem(private_key=True, password=None))
    secret = folder / "secret.key"
    secret.write_text(json.loads(OCT_KEY.export())["k"] + "\n")
    return {"rsa": pem, "oct": secret}


@pytest.fixture(scope="module")
def proxies(key_files, echo_server):
    from conftest import ProxyProcess

    procs = {
        kind: ProxyProcess(
            ["--token-plugin", "JWTTokenApi", "--token-source", str(path), "127.0.0.1:0"]
        )
        for kind, path in key_files.items()
    }
    yield procs
    for proc in procs.values():
        proc.stop()


def target(echo_server, **claims: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": echo_server.port, **claims}


def test_signed_tokens_rs256_and_hs256(proxies, echo_server) -> None:
    rs = signed(RSA_KEY, target(echo_server), "RS256")
    hs = signed(OCT_KEY, {**target(echo_server), "port": str(echo_server.port)}, "HS256")
    assert echo_once(f"ws://127.0.0.1:{proxies['rsa'].port}/?token={rs}", b"rs") == b"rs"
    assert echo_once(f"ws://127.0.0.1:{proxies['oct'].port}/?token={hs}", b"hs") == b"hs"
    # each key only verifies its own tokens
    assert upgrade_status(proxies["rsa"].port, f"/?token={hs}")[0] == 404
    assert upgrade_status(proxies["oct"].port, f"/?token={rs}")[0] == 404


def test_encrypted_tokens(proxies, echo_server) -> None:
    # websockify's form: a signed token inside a JWE, one key for both
    nested = encrypted(RSA_KEY, signed(RSA_KEY, target(echo_server), "RS256"), "RSA-OAEP")
    assert echo_once(f"ws://127.0.0.1:{proxies['rsa'].port}/?token={nested}", b"jwe") == b"jwe"
    direct = encrypted(OCT_KEY, target(echo_server), "A256KW")  # the claims themselves
    assert echo_once(f"ws://127.0.0.1:{proxies['oct'].port}/?token={direct}", b"kw") == b"kw"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nbf": time.time() + 3600}, "not valid before"),
        ({"exp": time.time() - 1}, "expired at"),
        ({"exp": "tomorrow"}, "claim exp is not a number"),
    ],
)
def test_time_claims_are_honoured(proxies, echo_server, claims, reason) -> None:
    token = signed(RSA_KEY, target(echo_server, **claims), "RS256")
    assert upgrade_status(proxies["rsa"].port, f"/?token={token}")[0] == 404
    proxies["rsa"].wait_log(reason)


def test_a_valid_exp_and_past_nbf_pass(proxies, echo_server) -> None:
    claims = target(echo_server, nbf=int(time.time()) - 5, exp=int(time.time()) + 600)
    token = signed(OCT_KEY, claims, "HS256")
    assert echo_once(f"ws://127.0.0.1:{proxies['oct'].port}/?token={token}") == b"ping"


def test_a_forged_or_garbled_token_is_not_found(proxies, echo_server) -> None:
    other = jwk.JWK.generate(kty="RSA", size=2048)
    forged = signed(other, target(echo_server), "RS256")
    for token in (forged, "not.a.jwt", "garbage"):
        assert upgrade_status(proxies["rsa"].port, f"/?token={token}")[0] == 404
    unsigned = ".".join(
        base64url_encode(json.dumps(part)) for part in ({"alg": "none"}, target(echo_server))
    )
    assert upgrade_status(proxies["rsa"].port, f"/?token={unsigned}.")[0] == 404
    proxies["rsa"].wait_log("JWT token refused: .*not allowed")


def test_a_token_without_target_claims_is_not_found(proxies) -> None:
    token = signed(OCT_KEY, {"sub": "someone"}, "HS256")
    assert upgrade_status(proxies["oct"].port, f"/?token={token}")[0] == 404
    proxies["oct"].wait_log("JWT token refused: no host and port claims")


@pytest.mark.parametrize("content", [None, b"neither a PEM nor base64url !!"])
def test_bad_key_file_exits_2(run_proxy, tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content)
    log = refused_start(
        run_proxy, ["--token-plugin", "JWTTokenApi", "--token-source", str(path), "127.0.0.1:0"]
    )
    assert f"{path}: token_source: " in log
    assert "(expected a PEM key file, or a file holding a symmetric key in base64url)" in log
