"""Settings of the front door: TLS (toward clients and toward the target), the web server, the
Flash policy responder and authentication. A group of the one table (:mod:`wsproxy.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from wsproxy.protocol.policy import parse_domain as parse_policy_domain
from wsproxy.protocol.policy import parse_ports as parse_policy_ports
from wsproxy.settings.rows import declare
from wsproxy.settings.values import choice, parse_bool, parse_path, parse_text

__all__ = ["DEFAULT_CERT", "SSL_VERSIONS", "SecuritySettings"]

YES_NO = "yes or no"
DEFAULT_CERT = "self.pem"  # websockify's default: used for TLS when the file exists
SSL_VERSIONS = ("default", "tlsv1_1", "tlsv1_2", "tlsv1_3")


@dataclass(frozen=True)
class SecuritySettings:
    # -- TLS toward clients --
    cert: str | None = declare(  # None: the default, self.pem, is not there
        DEFAULT_CERT,
        parse_path,
        "a PEM file",
        "TLS certificate (PEM, may hold the key too): accept wss:// and https://; the default "
        "is used only if it exists",
        meta="FILE",
    )
    key: str | None = declare(
        None, parse_path, "a PEM file", "TLS private key, if not in the --cert file", meta="FILE"
    )
    key_password: str | None = declare(
        None,
        parse_text,
        "the key's pass phrase",
        "pass phrase of an encrypted --key (never logged)",
        meta="PASSWORD",
        secret=True,
    )
    ssl_only: bool = declare(False, parse_bool, YES_NO, "refuse plain (non-TLS) connections")
    ssl_version: str = declare(
        "default",
        choice(*SSL_VERSIONS),
        "default, tlsv1_1, tlsv1_2 or tlsv1_3",
        "the lowest TLS version accepted (default: TLS 1.2)",
        meta="VERSION",
    )
    ssl_ciphers: str | None = declare(
        None,
        parse_text,
        "an OpenSSL cipher list (see openssl ciphers)",
        "TLS 1.2 ciphers allowed (default: OpenSSL's)",
        meta="CIPHERS",
    )
    verify_client: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "require a client certificate signed by a CA in --cafile (default: the system CAs)",
    )
    cafile: str | None = declare(
        None, parse_path, "a PEM file", "CA certificates for --verify-client", meta="FILE"
    )
    # -- TLS toward the target --
    ssl_target: bool = declare(
        False, parse_bool, YES_NO, "connect to the target over TLS (its name is checked)"
    )
    target_cafile: str | None = declare(
        None,
        parse_path,
        "a PEM file",
        "CA certificates a --ssl-target target's certificate is checked against "
        "(default: the system CAs)",
        meta="FILE",
    )
    target_insecure: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "do not check a --ssl-target target's certificate (logged as a warning)",
    )
    # -- web server --
    web: str | None = declare(
        None,
        parse_path,
        "a directory",
        "serve static files from DIR to plain HTTP requests on the same port",
        meta="DIR",
    )
    file_only: bool = declare(
        False, parse_bool, YES_NO, "do not list directories without an index.html (with --web)"
    )
    web_auth: bool = declare(
        False, parse_bool, YES_NO, "ask the --auth-plugin for web server requests too"
    )
    # -- authentication --
    auth_plugin: str | None = declare(
        None,
        parse_text,
        "a built-in plug-in name (BasicHTTPAuth, ExpectOrigin, ClientCertCNAuth) or a "
        "dotted path pkg.mod.Class",
        "decide with this plug-in whether a client may connect (README: Authentication)",
        meta="CLASS",
        restart=True,
    )
    auth_source: str | None = declare(
        None,
        parse_text,
        "the auth plug-in's argument",
        "the argument the auth plug-in is created with",
        meta="ARG",
        secret=True,
    )
    # -- Flash policy --
    policy: bool = declare(
        True, parse_bool, YES_NO, "answer Flash <policy-file-request/> on the same port"
    )
    policy_domain: str = declare(
        "*",
        parse_policy_domain,
        "*, a host name (*.example.com) or an IP address",
        "domain the Flash policy allows",
        meta="DOMAIN",
    )
    policy_ports: tuple[str, ...] = declare(
        (),
        parse_policy_ports,
        "ports N, ranges N-M or * separated by commas",
        "ports the Flash policy allows; empty means the listening port",
        meta="PORTS",
    )
