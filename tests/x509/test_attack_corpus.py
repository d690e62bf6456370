"""An attack corpus of crafted certificate chains, each with the typed refusal it must get.

Every case is verified with :func:`verify_x509_svid`; the cases marked for it are also
presented in a real TLS handshake over loopback to a zerotrust context of the other side
(the refusal its listener receives) and forwarded by a trusted proxy in an XFCC header to an
:class:`Authenticator` (the error authentication raises): the same refusal everywhere.

The rules themselves are pinned at their own level elsewhere, and not repeated here: SPIFFE
ID grammar (tests/conformance/test_spiffe_id_vectors.py), unreadable certificates and keys,
RSA bounds, name-constraint work and non-positive serial numbers
(test_hostile_certificates.py), the ten-certificate limit and path length (test_verify.py),
XFCC syntax (tests/authn/test_xfcc.py). What is here is each attack's whole path, from
crafted DER to the typed error, and the cases nobody built before.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from zerotrust import (
    Authenticator,
    BundleSet,
    TrustBundle,
    TrustedProxies,
    client_ssl_context,
    match,
    server_ssl_context,
    verify_x509_svid,
)
from zerotrust._sansio import drive
from zerotrust.authn.request import Request
from zerotrust.errors import (
    BundleError,
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    MalformedCertificate,
    MalformedCredentials,
    NoTrustBundle,
    SvidProfileViolation,
    UntrustedCertificate,
)
from zerotrust.x509 import HandshakeRefusal

NOW = dt.datetime.now(dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
WEB = "spiffe://example.org/ns/shop/sa/web"
API = "spiffe://example.org/ns/shop/sa/api"
PROXY_ADDRESS = "10.1.2.3"

PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | dsa.DSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

# An EC public key on P-256 written with explicit curve parameters (RFC 5480 2.1.1:
# specifiedCurve MUST NOT be used; Go's parser, and so go-spiffe, refuses it).
EXPLICIT_P256_SPKI = base64.b64decode(
    "MIIBSzCCAQMGByqGSM49AgEwgfcCAQEwLAYHKoZIzj0BAQIhAP////8AAAABAAAAAAAAAAAAAAAA////////////////"
    "MFsEIP////8AAAABAAAAAAAAAAAAAAAA///////////////8BCBaxjXYqjqT57PrvVV2mIa8ZR0GsMxTsPY7zjw+J9Jg"
    "SwMVAMSdNgiG5wSTamZ44ROdJreBn36QBEEEaxfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpZP40Li/hp/m47n"
    "60p8D54WK84zV2sxXs7LtkBoN79R9QIhAP////8AAAAA//////////+85vqtpxeehPO5ysL8YyVRAgEBA0IABEPGbX0Y"
    "YVwvm/WYus4MWNrp7CHyQbKOH+iF5nqQfBq0yJOW+OYIN0S8nbdAvKoGgiCIzp8fienb7ezDPXU57og="
)
ECDSA_WITH_SHA1 = bytes.fromhex("2a8648ce3d040101")
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1")


# --- a little DER, for what CertificateBuilder refuses to write -----------------------------

Node = list[Any]  # [tag, bytes | list[Node]]


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def der_parse(data: bytes) -> list[Node]:
    nodes: list[Node] = []
    pos = 0
    while pos < len(data):
        tag, first = data[pos], data[pos + 1]
        pos += 2
        size = first
        if first & 0x80:
            count = first & 0x7F
            size = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        body = data[pos : pos + size]
        pos += size
        nodes.append([tag, der_parse(body) if tag & 0x20 else body])
    return nodes


def der_encode(nodes: list[Node]) -> bytes:
    out = b""
    for tag, body in nodes:
        raw = der_encode(body) if isinstance(body, list) else body
        out += bytes([tag]) + _der_length(len(raw)) + raw
    return out


def resigned(
    cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    edit: Callable[[list[Node]], None],
    *,
    algorithm: bytes | None = None,
    digest: hashes.HashAlgorithm | None = None,
) -> bytes:
    """``cert`` with its TBSCertificate's fields edited in place by ``edit``, signed again by
    ``issuer_key`` (optionally with another ECDSA, or RSA PKCS #1 v1.5, algorithm): DER whose
    signature verifies."""
    (outer,) = der_parse(cert.public_bytes(serialization.Encoding.DER))
    tbs, algorithm_id, _ = outer[1]
    fields = tbs[1]
    edit(fields)
    if algorithm is not None:
        algorithm_id = [0x30, [[0x06, algorithm]]]
        fields[2] = algorithm_id
    tbs_der = der_encode([tbs])
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        algorithm_id = [0x30, [[0x06, algorithm], [0x05, b""]]] if algorithm else algorithm_id
        fields[2] = algorithm_id
        tbs_der = der_encode([tbs])
        signature = issuer_key.sign(tbs_der, padding.PKCS1v15(), digest or hashes.SHA256())
    else:
        signature = issuer_key.sign(tbs_der, ec.ECDSA(digest or hashes.SHA256()))
    return der_encode([[0x30, [tbs, algorithm_id, [0x03, b"\x00" + signature]]]])


# TBSCertificate fields, version present: 0 version, 1 serial, 2 signature, 3 issuer,
# 4 validity, 5 subject, 6 subjectPublicKeyInfo, 7 extensions


def _swap_validity(fields: list[Node]) -> None:
    validity = fields[4][1]
    validity[0], validity[1] = validity[1], validity[0]


def _generalized_times(fields: list[Node]) -> None:
    for time in fields[4][1]:  # UTCTime YYMMDDhhmmssZ -> GeneralizedTime, which DER forbids
        time[0], time[1] = 0x18, b"20" + time[1]


def _serial(content: bytes) -> Callable[[list[Node]], None]:
    def edit(fields: list[Node]) -> None:
        fields[1][1] = content

    return edit


def _version_1(fields: list[Node]) -> None:
    fields[:] = [f for f in fields if f[0] not in (0xA0, 0xA3)]  # no version, no extensions


def _explicit_curve(fields: list[Node]) -> None:
    """The leaf's own P-256 key, its curve written as explicit parameters."""
    (explicit,) = der_parse(EXPLICIT_P256_SPKI)
    algorithm, point = fields[6][1]
    assert algorithm[1][1] == [0x06, bytes.fromhex("2a8648ce3d030107")]  # named: P-256
    fields[6] = [0x30, [explicit[1][0], point]]


def _bytes_replaced(old: bytes, new: bytes) -> Callable[[list[Node]], None]:
    def edit(fields: list[Node]) -> None:
        raw = der_encode([[0x30, fields]])
        assert raw.count(old) == 1
        fields[:] = der_parse(raw.replace(old, new))[0][1]

    return edit


# --- the authorities the cases are built from -----------------------------------------------


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_bits(spki: Node) -> bytes:
    """The subjectPublicKey bits of a parsed SubjectPublicKeyInfo: the same for a key however
    its algorithm parameters are written (a named curve or explicit parameters, which not
    every cryptography release can load)."""
    _, (_, (_, bits)) = spki  # type: ignore[misc]
    assert isinstance(bits, bytes)
    return bits


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def key_usage(
    *,
    sign: bool = False,
    agree: bool = False,
    encipher: bool = False,
    certs: bool = False,
    crls: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(sign, False, encipher, False, agree, certs, crls, False, False)


LEAF_USAGE = key_usage(sign=True, agree=True)
CA_USAGE = key_usage(certs=True, crls=True)


@dataclass
class Cert:
    """What to put in a certificate; :meth:`World.sign` writes it."""

    subject: str
    key: PrivateKey
    issuer: str | None = None  # None: self-signed
    ca: bool | None = False  # None: no basic constraints
    path_length: int | None = None
    usage: x509.KeyUsage | None = None  # None: no key usage
    usage_critical: bool = True
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    eku: tuple[ObjectIdentifier, ...] | None = (
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    not_before: dt.datetime = NOW - HOUR
    not_after: dt.datetime = NOW + HOUR
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = ()
    digest: hashes.HashAlgorithm | None = field(default_factory=hashes.SHA256)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


class World:
    """Two trust domains, example.org and other.org, each a self-signed root; certificates
    are signed by name from the keys this world holds."""

    def __init__(self) -> None:
        self.keys: dict[str, PrivateKey] = {}
        self.by_public_key: dict[bytes, PrivateKey] = {}
        self.root = self.sign(
            Cert(
                "root", ec_key(), ca=True, usage=CA_USAGE, uris=("spiffe://example.org",), eku=None
            )
        )
        self.other_root = self.sign(
            Cert("other", ec_key(), ca=True, usage=CA_USAGE, uris=("spiffe://other.org",), eku=None)
        )
        self.rsa_root = self.sign(
            Cert("rsa", rsa.generate_private_key(65537, 2048), ca=True, usage=CA_USAGE, eku=None)
        )
        # an authority of example.org naming a workload, to be presented as a leaf
        self.anchor = self.sign(Cert("anchor", ec_key(), ca=True, usage=CA_USAGE, uris=(WEB,)))
        self.bundles = BundleSet(
            [
                TrustBundle("example.org", [self.root, self.anchor]),
                TrustBundle("other.org", [self.other_root]),
                TrustBundle("rsa.example", [self.rsa_root]),
            ]
        )

    def sign(self, spec: Cert) -> x509.Certificate:
        self.keys[spec.subject] = spec.key
        (spki,) = der_parse(_public(spec.key.public_key()))
        self.by_public_key[_key_bits(spki)] = spec.key
        issuer = spec.issuer or spec.subject
        issuer_key = self.keys[issuer]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(spec.subject))
            .issuer_name(_name(issuer))
            .public_key(spec.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(spec.not_before)
            .not_valid_after(spec.not_after)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(spec.key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        )
        if spec.ca is not None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length), critical=True
            )
        if spec.usage is not None:
            builder = builder.add_extension(spec.usage, critical=spec.usage_critical)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec.uris]
        names += [x509.DNSName(d) for d in spec.dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if spec.eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(spec.eku)), critical=False)
        for extension, critical in spec.extra:
            builder = builder.add_extension(extension, critical=critical)
        edwards = isinstance(issuer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        return builder.sign(issuer_key, None if edwards else spec.digest)  # type: ignore[arg-type]

    def leaf(self, issuer: str = "root", **kw: Any) -> x509.Certificate:
        kw.setdefault("uris", (WEB,))
        kw.setdefault("usage", LEAF_USAGE)
        key = kw.pop("key", None) or ec_key()
        return self.sign(Cert("leaf", key, issuer, **kw))

    def intermediate(
        self, name: str = "intermediate", issuer: str = "root", **kw: object
    ) -> x509.Certificate:
        kw.setdefault("ca", True)
        kw.setdefault("usage", CA_USAGE)
        kw.setdefault("uris", ("spiffe://example.org",))
        kw.setdefault("eku", None)
        return self.sign(Cert(name, ec_key(), issuer, **kw))  # type: ignore[arg-type]

    def key_for(self, leaf: bytes) -> PrivateKey:
        """The private key of the (possibly crafted) certificate ``leaf``."""
        (outer,) = der_parse(leaf)
        return self.by_public_key[_key_bits(outer[1][0][1][6])]  # type: ignore[index]

    def key_of(self, name: str) -> ec.EllipticCurvePrivateKey:
        key = self.keys[name]
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


Chain = list[x509.Certificate | bytes]


def der(chain: Sequence[x509.Certificate | bytes]) -> list[bytes]:
    return [
        c if isinstance(c, bytes) else c.public_bytes(serialization.Encoding.DER) for c in chain
    ]


# --- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[World], Chain]
    error: type[CertificateError]
    rule: str | None = None
    role: str = "client"
    #: also refused the same way in a real TLS handshake / forwarded by a trusted proxy
    tls: bool = False
    xfcc: bool = False
    #: the rule a TLS refusal names where OpenSSL's first pass refuses the leaf before
    #: zerotrust's check: X509_V_ERR_INVALID_PURPOSE is one code for a leaf that may not
    #: sign for the peer's role, whatever the reason, and the failed handshake leaves no
    #: certificate to tell which
    tls_rule: str | None = None
    #: the error a TLS refusal is where OpenSSL's first pass names it otherwise: a
    #: certificate of the path outside its validity is certificate_expired (or not yet valid)
    #: whichever certificate it is, where verify_x509_svid says only the leaf's validity so
    #: and the rest of the path is untrusted
    tls_error: type[CertificateError] | None = None


def _uri(*uris: str, **kw: Any) -> Callable[[World], Chain]:
    return lambda w: [w.leaf(uris=uris, **kw)]


def _leaf(**kw: Any) -> Callable[[World], Chain]:
    return lambda w: [w.leaf(**kw)]


def _big_extension(size: int) -> tuple[tuple[x509.ExtensionType, bool], ...]:
    return (
        (x509.UnrecognizedExtension(UNKNOWN_OID, b"\x04" + _der_length(size) + b"a" * size), False),
    )


def _unknown_critical(w: World) -> Chain:
    return [w.leaf(extra=((x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True),))]


def _via(
    intermediate: Callable[[World], x509.Certificate], **leaf: object
) -> Callable[[World], Chain]:
    def build(w: World) -> Chain:
        signing = intermediate(w)
        return [w.leaf("intermediate", **leaf), signing]

    return build


def _path_length_exceeded(w: World) -> Chain:
    first = w.intermediate("first", path_length=0)
    second = w.intermediate("second", "first")
    return [w.leaf("second"), second, first]


def _cross_domain(w: World) -> Chain:
    return [w.leaf("other")]  # an example.org ID signed by other.org's root; both trusted


def _cross_domain_intermediate(w: World) -> Chain:
    # other.org's root signs an intermediate naming example.org: still not example.org's bundle
    return [w.leaf("intermediate"), w.intermediate(issuer="other")]


def _id_in_subject(w: World) -> Chain:
    return [w.sign(Cert(WEB, ec_key(), "root", usage=LEAF_USAGE))]  # CN=spiffe://..., no SAN


def _root_as_leaf(w: World) -> Chain:
    return [w.root]


def _anchor_as_leaf(w: World) -> Chain:
    return [w.anchor]


def _self_signed_leaf(w: World) -> Chain:
    return [w.sign(Cert("selfie", ec_key(), ca=False, usage=LEAF_USAGE, uris=(WEB,)))]


def _loop(w: World) -> Chain:
    key_a, key_b = ec_key(), ec_key()
    w.keys["a"], w.keys["b"] = key_a, key_b
    a = w.sign(Cert("a", key_a, "b", ca=True, usage=CA_USAGE, eku=None))
    b = w.sign(Cert("b", key_b, "a", ca=True, usage=CA_USAGE, eku=None))
    return [w.leaf("a"), a, b]


def _long_chain(count: int) -> Callable[[World], Chain]:
    def build(w: World) -> Chain:
        issuer, intermediates = "root", list[x509.Certificate | bytes]()
        for index in range(count):
            intermediates.insert(0, w.intermediate(f"i{index}", issuer))
            issuer = f"i{index}"
        return [w.leaf(issuer), *intermediates]

    return build


def _crafted(edit: Callable[[list[Node]], None], **kw: Any) -> Callable[[World], Chain]:
    return lambda w: [resigned(w.leaf(**kw), w.key_of("root"), edit)]


def _rsa_signed(algorithm: bytes, digest: hashes.HashAlgorithm) -> Callable[[World], Chain]:
    def build(w: World) -> Chain:
        leaf = w.leaf("rsa", uris=("spiffe://rsa.example/ns/shop/sa/web",))
        key = w.keys["rsa"]
        assert isinstance(key, rsa.RSAPrivateKey)
        return [resigned(leaf, key, lambda _: None, algorithm=algorithm, digest=digest)]

    return build


MD5_WITH_RSA = bytes.fromhex("2a864886f70d010104")
SHA1_WITH_RSA = bytes.fromhex("2a864886f70d010105")
SHA256_WITH_RSA = bytes.fromhex("2a864886f70d01010b")


def _sha1(w: World) -> Chain:
    leaf = w.leaf()
    return [
        resigned(
            leaf,
            w.key_of("root"),
            lambda _: None,
            algorithm=ECDSA_WITH_SHA1,
            digest=hashes.SHA1(),
        )
    ]


DNS_CONSTRAINT = x509.NameConstraints(
    permitted_subtrees=[x509.DNSName("other.org")], excluded_subtrees=None
)
URI_EXCLUDED = x509.NameConstraints(
    permitted_subtrees=None, excluded_subtrees=[x509.UniformResourceIdentifier("example.org")]
)
URI_PERMITTED = x509.NameConstraints(
    permitted_subtrees=[x509.UniformResourceIdentifier("other.org")], excluded_subtrees=None
)

ID = "invalid_spiffe_id"
CASES = [
    # SPIFFE ID forms in the leaf
    Case(
        "two-uri-sans",
        _uri(WEB, API),
        SvidProfileViolation,
        "multiple_uri_sans",
        tls=True,
        xfcc=True,
    ),
    Case(
        "id-in-subject-cn-only", _id_in_subject, SvidProfileViolation, "missing_uri_san", tls=True
    ),
    Case(
        "uppercase-scheme",
        _uri("SPIFFE://example.org/a"),
        SvidProfileViolation,
        ID,
        tls=True,
        xfcc=True,
    ),
    Case("uppercase-trust-domain", _uri("spiffe://EXAMPLE.org/a"), SvidProfileViolation, ID),
    Case(
        "percent-encoded", _uri("spiffe://example.org/a%2Fb"), SvidProfileViolation, ID, xfcc=True
    ),
    Case("dot-segment", _uri("spiffe://example.org/a/../admin"), SvidProfileViolation, ID),
    Case("single-dot-segment", _uri("spiffe://example.org/./a"), SvidProfileViolation, ID),
    Case("trailing-slash", _uri("spiffe://example.org/a/"), SvidProfileViolation, ID),
    Case("empty-segment", _uri("spiffe://example.org/a//b"), SvidProfileViolation, ID),
    Case("query", _uri("spiffe://example.org/a?b=c"), SvidProfileViolation, ID),
    Case("fragment", _uri("spiffe://example.org/a#b"), SvidProfileViolation, ID),
    Case("userinfo", _uri("spiffe://admin@example.org/a"), SvidProfileViolation, ID),
    Case("port", _uri("spiffe://example.org:443/a"), SvidProfileViolation, ID),
    Case("root-id", _uri("spiffe://example.org"), SvidProfileViolation, "root_spiffe_id", tls=True),
    # a punycode trust domain is a trust domain of its own, with no bundle here
    Case("punycode-trust-domain", _uri("spiffe://xn--bcher-kva.example/a"), NoTrustBundle),
    Case(
        "utf8-trust-domain",
        _crafted(
            _bytes_replaced(b"bxxcher", b"b\xc3\xbccher"), uris=("spiffe://bxxcher.example/a",)
        ),
        SvidProfileViolation,
        ID,
    ),
    Case(
        "nul-in-path",
        _crafted(_bytes_replaced(b"/aXb", b"/a\x00b"), uris=("spiffe://example.org/aXb",)),
        SvidProfileViolation,
        ID,
    ),
    Case(
        "non-ascii-uri",
        _crafted(_bytes_replaced(b"/aXb", b"/a\xe9b"), uris=("spiffe://example.org/aXb",)),
        SvidProfileViolation,
        "malformed_extension",
    ),
    Case(
        "id-of-2049-bytes",
        _uri("spiffe://example.org/" + "a" * (2049 - len("spiffe://example.org/"))),
        SvidProfileViolation,
        ID,
    ),
    Case(
        "dns-san-look-alike",
        _leaf(uris=(), dns=("spiffe.example.org",)),
        SvidProfileViolation,
        "missing_uri_san",
        tls=True,
        xfcc=True,
    ),
    Case(
        "other-scheme-beside-valid-id",
        _uri(WEB, "https://example.org/web"),
        SvidProfileViolation,
        "multiple_uri_sans",
    ),
    # leaf profile
    Case(
        "ca-leaf",
        _leaf(ca=True, usage=key_usage(sign=True, agree=True)),
        SvidProfileViolation,
        "leaf_is_ca",
        tls=True,
        xfcc=True,
    ),
    Case(
        "key-cert-sign-leaf",
        _leaf(usage=key_usage(sign=True, certs=True)),
        SvidProfileViolation,
        "leaf_key_cert_sign",
        tls=True,
        xfcc=True,
    ),
    Case(
        "crl-sign-leaf",
        _leaf(usage=key_usage(sign=True, crls=True)),
        SvidProfileViolation,
        "leaf_crl_sign",
        tls=True,
    ),
    Case(
        "no-digital-signature",
        _leaf(usage=key_usage(agree=True)),
        SvidProfileViolation,
        "missing_digital_signature",
        tls=True,
        xfcc=True,
    ),
    Case("no-key-usage", _leaf(usage=None), SvidProfileViolation, "missing_key_usage"),
    Case(
        "server-only-eku-as-client",
        _leaf(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        SvidProfileViolation,
        "extended_key_usage",
        tls=True,
        xfcc=True,
    ),
    Case(
        "client-only-eku-as-server",
        _leaf(eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)),
        SvidProfileViolation,
        "extended_key_usage",
        role="server",
        tls=True,
    ),
    Case(
        "code-signing-eku",
        _leaf(eku=(ExtendedKeyUsageOID.CODE_SIGNING,)),
        SvidProfileViolation,
        "extended_key_usage",
    ),
    Case(
        "unknown-critical-extension", _unknown_critical, UntrustedCertificate, tls=True, xfcc=True
    ),
    Case("version-1", _crafted(_version_1), SvidProfileViolation, "missing_uri_san"),
    Case("zero-serial", _crafted(_serial(b"\x00")), MalformedCertificate, tls=True),
    Case("negative-serial", _crafted(_serial(b"\x80\x01")), MalformedCertificate),
    # notBefore after notAfter: refused (it is valid at no time) before anything else
    Case("not-before-after-not-after", _crafted(_swap_validity), CertificateNotYetValid),
    Case(
        "not-yet-valid",
        _leaf(not_before=NOW + HOUR, not_after=NOW + 2 * HOUR),
        CertificateNotYetValid,
        tls=True,
        xfcc=True,
    ),
    Case(
        "expired",
        _leaf(not_before=NOW - 2 * HOUR, not_after=NOW - HOUR),
        CertificateExpired,
        tls=True,
        xfcc=True,
    ),
    Case(
        "generalized-time-before-2050",
        _crafted(_generalized_times),
        UntrustedCertificate,
        xfcc=True,
    ),
    Case("ecdsa-with-sha1", _sha1, UntrustedCertificate),
    Case("md5-with-rsa", _rsa_signed(MD5_WITH_RSA, hashes.MD5()), UntrustedCertificate),
    Case(
        # (OpenSSL will not even load such a chain to present it: no handshake)
        "sha1-with-rsa",
        _rsa_signed(SHA1_WITH_RSA, hashes.SHA1()),
        UntrustedCertificate,
    ),
    Case(
        "rsa-1024",
        _leaf(key=rsa.generate_private_key(65537, 1024), usage=key_usage(sign=True, encipher=True)),
        SvidProfileViolation,
        "weak_key",
        xfcc=True,
    ),
    Case(
        "dsa-key",
        _leaf(key=dsa.generate_private_key(2048), usage=key_usage(sign=True)),
        SvidProfileViolation,
        "unsupported_key",
    ),
    Case("explicit-curve-parameters", _crafted(_explicit_curve), MalformedCertificate, tls=True),
    Case("p-192", _leaf(key=ec_key(ec.SECP192R1())), SvidProfileViolation, "unsupported_key"),
    Case(
        "secp256k1",
        _leaf(key=ec_key(ec.SECP256K1())),
        SvidProfileViolation,
        "unsupported_key",
        xfcc=True,
    ),
    # chain attacks
    Case(
        "ca-false-intermediate",
        _via(lambda w: w.intermediate(ca=False)),
        UntrustedCertificate,
        tls=True,
        xfcc=True,
    ),
    Case(
        "intermediate-without-basic-constraints",
        _via(lambda w: w.intermediate(ca=None)),
        UntrustedCertificate,
    ),
    Case(
        "intermediate-without-key-cert-sign",
        _via(lambda w: w.intermediate(usage=key_usage(crls=True))),
        UntrustedCertificate,
        tls=True,
    ),
    Case("path-length-exceeded", _path_length_exceeded, UntrustedCertificate, tls=True, xfcc=True),
    Case(
        "dns-constraint-excludes-leaf",
        _via(lambda w: w.intermediate(extra=((DNS_CONSTRAINT, True),)), dns=("web.example.org",)),
        UntrustedCertificate,
    ),
    Case(
        "uri-constraint-excluded",
        _via(lambda w: w.intermediate(extra=((URI_EXCLUDED, True),))),
        UntrustedCertificate,
    ),
    Case(
        "uri-constraint-permits-other",
        _via(lambda w: w.intermediate(extra=((URI_PERMITTED, True),))),
        UntrustedCertificate,
        tls=True,
    ),
    Case(
        "expired-intermediate",
        _via(lambda w: w.intermediate(not_before=NOW - 3 * HOUR, not_after=NOW - 2 * HOUR)),
        UntrustedCertificate,
        tls=True,
        xfcc=True,
        tls_error=CertificateExpired,
    ),
    Case(
        "intermediate-not-yet-valid",
        _via(lambda w: w.intermediate(not_before=NOW + HOUR, not_after=NOW + 2 * HOUR)),
        UntrustedCertificate,
        tls=True,
        tls_error=CertificateNotYetValid,
    ),
    Case(
        "intermediate-with-workload-id",
        _via(lambda w: w.intermediate(uris=(API,))),
        SvidProfileViolation,
        "signing_certificate_id",
        tls=True,
        xfcc=True,
    ),
    Case("cross-domain-leaf", _cross_domain, UntrustedCertificate, tls=True, xfcc=True),
    Case("cross-domain-intermediate", _cross_domain_intermediate, UntrustedCertificate, tls=True),
    Case("root-as-leaf", _root_as_leaf, SvidProfileViolation, "root_spiffe_id"),
    Case(
        "trust-anchor-as-leaf",
        _anchor_as_leaf,
        SvidProfileViolation,
        "leaf_is_ca",
        tls=True,
        tls_rule="extended_key_usage",
    ),
    Case("self-signed-leaf", _self_signed_leaf, UntrustedCertificate, tls=True, xfcc=True),
    Case("loop", _loop, UntrustedCertificate, tls=True),
    Case("eleven-certificates", _long_chain(10), MalformedCertificate, tls=True),
    Case("twenty-one-certificates", _long_chain(20), MalformedCertificate),
    Case(
        "certificate-over-64-kib",
        _leaf(extra=_big_extension(70_000)),
        MalformedCertificate,
        tls=True,
    ),
    Case("certificate-of-1-mib", _leaf(extra=_big_extension(1 << 20)), MalformedCertificate),
]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def chains(world: World) -> dict[str, Chain]:
    return {case.id: case.build(world) for case in CASES}


def _check(error: BaseException, case: Case) -> None:
    assert type(error) is case.error, error
    if case.rule is not None:
        assert isinstance(error, SvidProfileViolation)
        assert error.rule == case.rule, error


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_crafted_chain_is_refused_with_its_typed_error(
    case: Case, world: World, chains: dict[str, Chain]
) -> None:
    with pytest.raises(CertificateError) as caught:
        verify_x509_svid(der(chains[case.id]), world.bundles, role=case.role)  # type: ignore[arg-type]
    _check(caught.value, case)


def _with_root(w: World) -> Chain:
    signing = w.intermediate()
    return [w.leaf("intermediate"), signing, w.root]


def _shuffled(w: World) -> Chain:
    first = w.intermediate()
    second = w.intermediate("second", "intermediate")
    return [w.leaf("second"), w.root, first, second]


def _duplicates(w: World) -> Chain:
    signing = w.intermediate()
    return [w.leaf("intermediate"), signing, signing, signing]


#: Chains that look odd but are SVIDs: each is accepted everywhere, with its leaf's ID.
ACCEPTED: list[tuple[str, Callable[[World], Chain], str]] = [
    ("root-included", _with_root, "client"),
    ("order-shuffled", _shuffled, "client"),
    ("duplicate-certificates", _duplicates, "client"),
    # X509-SVID 4.3 asks for a critical key usage; documented as accepted (docs/x509.md)
    ("key-usage-not-critical", _leaf(usage_critical=False), "client"),
    ("no-extended-key-usage-as-client", _leaf(eku=None), "client"),
    # the control of the RSA signature cases: signed again the same way, with SHA-256
    ("sha256-with-rsa-signed-again", _rsa_signed(SHA256_WITH_RSA, hashes.SHA256()), "client"),
    (
        "ed25519-leaf",
        _leaf(key=ed25519.Ed25519PrivateKey.generate(), usage=key_usage(sign=True)),
        "client",
    ),
    (
        "ed448-leaf",
        _leaf(key=ed448.Ed448PrivateKey.generate(), usage=key_usage(sign=True)),
        "client",
    ),
    # name constraints of a name type the leaf does not carry constrain nothing (RFC 5280)
    (
        "dns-constraint-on-a-leaf-without-dns",
        _via(lambda w: w.intermediate(extra=((DNS_CONSTRAINT, True),))),
        "client",
    ),
    # X509-SVID 3.2: a signing certificate's ID MAY reside in the leaf's trust domain
    (
        "intermediate-naming-another-trust-domain",
        _via(lambda w: w.intermediate(uris=("spiffe://other.org",))),
        "client",
    ),
]


@pytest.fixture(scope="module")
def accepted(world: World) -> dict[str, Chain]:
    return {name: build(world) for name, build, _ in ACCEPTED}


@pytest.mark.parametrize(
    ("name", "role"), [(n, r) for n, _, r in ACCEPTED], ids=[n for n, _, _ in ACCEPTED]
)
def test_an_odd_chain_that_is_an_svid_is_accepted_everywhere(
    name: str, role: str, world: World, accepted: dict[str, Chain]
) -> None:
    chain = der(accepted[name])
    peer = verify_x509_svid(chain, world.bundles, role=role)  # type: ignore[arg-type]
    assert peer.spiffe_id.path == "/ns/shop/sa/web"
    assert tls_refusals(world, chain, role) == []
    if role == "client":
        for header_format in ("xfcc", "client-cert", "nginx"):
            headers = forwarded_headers(chain, header_format)
            result = forwarded(world, headers, header_format=header_format)
            assert result.principal.subject == str(peer.spiffe_id)  # type: ignore[attr-defined]


# --- the same chains in a real TLS handshake over loopback --------------------------------


class Presented:
    """Quacks like an X509Svid for loading into a context, without X509Svid's own checks
    (the chain is written as given, DER the test crafted included)."""

    def __init__(self, chain: list[bytes], key: PrivateKey) -> None:
        self._pem = b"".join(
            b"-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(item)
            + b"-----END CERTIFICATE-----\n"
            for item in chain
        )
        self.private_key = key

    def cert_chain_pem(self) -> bytes:
        return self._pem

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def get_x509_svid(self) -> Presented:
        return self


def _handshake(verifying: Callable[[], object], other: Callable[[], object]) -> None:
    """Run ``other``'s side on a thread and ``verifying``'s here: the refusal listener of
    the verifying side has been called, on this thread, when this returns."""

    def quietly() -> None:
        with contextlib.suppress(OSError, ssl.SSLError):  # the refused side sees an alert
            other()

    thread = threading.Thread(target=quietly, daemon=True)
    thread.start()
    with contextlib.suppress(OSError, ssl.SSLError):
        verifying()
    thread.join(10)
    assert not thread.is_alive()


def tls_refusals(world: World, chain: list[bytes], role: str) -> list[HandshakeRefusal]:
    """Present ``chain`` as the ``role`` side of a loopback TLS connection to a zerotrust
    context of the other side; returns what that context's refusal listener received."""
    refusals: list[HandshakeRefusal] = []
    crafted = Presented(chain, world.key_for(chain[0]))
    honest_chain = der([world.leaf(uris=(API,))])
    honest = Presented(honest_chain, world.key_for(honest_chain[0]))
    if role == "client":
        server_svid, client_svid = honest, crafted
    else:
        server_svid, client_svid = crafted, honest
    server_ctx = server_ssl_context(
        server_svid,  # type: ignore[arg-type]
        world.bundles,
        authorizer=match.any(),  # every verified peer: only the certificate checks refuse
        on_refusal=refusals.append if role == "client" else None,
    )
    client_ctx = client_ssl_context(
        client_svid,  # type: ignore[arg-type]
        world.bundles,
        authorizer=match.any(),  # every verified peer: only the certificate checks refuse
    )
    if role == "server":
        client_ctx.add_refusal_listener(refusals.append)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            raw, _ = listener.accept()
            with raw:
                raw.settimeout(10)
                with server_ctx.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(b"ok")

        def connect() -> None:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname="localhost") as conn,
            ):
                conn.recv(2)

        if role == "client":
            _handshake(serve, connect)
        else:
            _handshake(connect, serve)
    return refusals


TLS_CASES = [case for case in CASES if case.tls]


@pytest.mark.parametrize("case", TLS_CASES, ids=[c.id for c in TLS_CASES])
def test_a_crafted_chain_is_refused_the_same_way_in_a_tls_handshake(
    case: Case, world: World, chains: dict[str, Chain]
) -> None:
    (refusal,) = tls_refusals(world, der(chains[case.id]), case.role)
    assert refusal.role == case.role
    over_tls = dataclasses.replace(
        case, rule=case.tls_rule or case.rule, error=case.tls_error or case.error
    )
    _check(refusal.error, over_tls)


def test_the_tls_harness_accepts_an_honest_chain(world: World) -> None:
    assert tls_refusals(world, der([world.leaf()]), "client") == []
    assert tls_refusals(world, der([world.leaf()]), "server") == []


@pytest.mark.parametrize("role", ["client", "server"])
def test_a_leaf_whose_only_extended_key_usage_is_any_passes_verify_but_not_openssl(
    role: str, world: World
) -> None:
    """verify_x509_svid lets anyExtendedKeyUsage stand for either role (as go-spiffe does),
    OpenSSL's first pass of a handshake does not (X509-SVID 4.4: an SVID's extended key
    usage, when present, has serverAuth and clientAuth), as docs/x509.md says."""
    chain = der([world.leaf(eku=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,))])
    assert str(verify_x509_svid(chain, world.bundles, role=role).spiffe_id) == WEB  # type: ignore[arg-type]
    (refusal,) = tls_refusals(world, chain, role)
    assert isinstance(refusal.error, SvidProfileViolation)
    assert refusal.error.rule == "extended_key_usage"


def test_an_ec_key_with_explicit_curve_parameters_is_refused_wherever_it_arrives(
    world: World, chains: dict[str, Chain]
) -> None:
    """RFC 5480 2.1.1: an EC key names its curve; explicit parameters MUST NOT be used.
    cryptography reads explicit parameters matching P-256 as P-256, so a leaf written that way
    passed verify_x509_svid and every forwarded-certificate header, while OpenSSL's first
    pass of a handshake refuses it (X509_V_ERR_EC_KEY_EXPLICIT_PARAMS) and Go's parser cannot
    read it. It is malformed wherever it arrives, a bundle authority included (the handshake
    is in the corpus)."""
    chain = der(chains["explicit-curve-parameters"])
    with pytest.raises(MalformedCredentials):
        forwarded(world, xfcc(chain))
    parsed = x509.load_der_x509_certificate(chain[0])  # a chain of certificate objects
    with pytest.raises(MalformedCertificate):
        verify_x509_svid([parsed], world.bundles)
    with pytest.raises(MalformedCertificate):
        verify_x509_svid([world.leaf(), parsed], world.bundles)
    key = ec_key()
    authority = world.sign(Cert("explicit", key, ca=True, usage=CA_USAGE, eku=None))
    pem = Presented([resigned(authority, key, _explicit_curve)], key).cert_chain_pem()
    with pytest.raises(BundleError):
        TrustBundle.from_pem("example.org", pem)


# --- the same chains forwarded by a trusted proxy in an XFCC header -------------------------


def xfcc(chain: list[bytes], **fields: str) -> str:
    pem = Presented(chain, ec_key()).cert_chain_pem().decode()
    pairs = [f"{key}={value}" for key, value in fields.items()]
    return ";".join(
        [
            "By=spiffe://example.org/ns/mesh/sa/envoy",
            *pairs,
            'Chain="' + urllib.parse.quote(pem, safe="") + '"',
        ]
    )


def forwarded(
    world: World,
    header: str | dict[str, str],
    remote_addr: str = PROXY_ADDRESS,
    header_format: str = "xfcc",
) -> object:
    """Authenticate a request from ``remote_addr`` carrying ``header`` (an XFCC value, or the
    headers of ``header_format``), the proxy at PROXY_ADDRESS being trusted."""
    proxies = TrustedProxies([f"{PROXY_ADDRESS}/32"], header=header_format)  # type: ignore[arg-type]
    authn = Authenticator(bundles=world.bundles, trusted_proxies=proxies)
    headers = {"x-forwarded-client-cert": header} if isinstance(header, str) else header
    view = Request(method="GET", route="/", path="/", headers=headers, remote_addr=remote_addr)
    return drive(authn.flow(view))


def forwarded_headers(chain: list[bytes], header_format: str) -> str | dict[str, str]:
    """``chain`` as a proxy of ``header_format`` forwards it."""
    if header_format == "xfcc":
        return xfcc(chain)
    if header_format == "nginx":  # $ssl_client_escaped_cert, with the chain after the leaf
        return {"x-ssl-client-cert": urllib.parse.quote(_pem(chain), safe="")}
    headers = {"client-cert": f":{base64.b64encode(chain[0]).decode()}:"}
    if chain[1:]:
        headers["client-cert-chain"] = ", ".join(
            f":{base64.b64encode(item).decode()}:" for item in chain[1:]
        )
    return headers


XFCC_CASES = [case for case in CASES if case.xfcc]


@pytest.mark.parametrize("header_format", ["xfcc", "client-cert", "nginx"])
@pytest.mark.parametrize("case", XFCC_CASES, ids=[c.id for c in XFCC_CASES])
def test_a_crafted_chain_is_refused_the_same_way_forwarded_by_a_trusted_proxy(
    case: Case, header_format: str, world: World, chains: dict[str, Chain]
) -> None:
    headers = forwarded_headers(der(chains[case.id]), header_format)
    with pytest.raises(CertificateError) as caught:
        forwarded(world, headers, header_format=header_format)
    _check(caught.value, case)


@pytest.mark.parametrize("header_format", ["xfcc", "client-cert", "nginx"])
def test_the_forwarding_harness_accepts_an_honest_chain(world: World, header_format: str) -> None:
    signing = world.intermediate()
    for chain in ([world.leaf()], [world.leaf("intermediate"), signing]):
        headers = forwarded_headers(der(chain), header_format)
        result = forwarded(world, headers, header_format=header_format)
        assert str(result.principal.subject) == WEB  # type: ignore[attr-defined]


# --- attacks on the header itself -------------------------------------------------------------


def _pem(chain: list[bytes]) -> str:
    return Presented(chain, ec_key()).cert_chain_pem().decode()


def _quoted_pem(chain: list[bytes]) -> str:
    return '"' + urllib.parse.quote(_pem(chain), safe="") + '"'


@pytest.fixture(scope="module")
def honest(world: World) -> list[bytes]:
    return der([world.leaf()])


@pytest.fixture(scope="module")
def admin(world: World) -> list[bytes]:
    return der([world.leaf(uris=("spiffe://example.org/ns/shop/sa/admin",))])


def _header_attacks(honest: list[bytes], admin: list[bytes]) -> dict[str, str]:
    envoy = "By=spiffe://example.org/ns/mesh/sa/envoy"
    cert, other = _quoted_pem(honest), _quoted_pem(admin)
    encoded = urllib.parse.quote(_pem(honest), safe="")
    admin_id = "spiffe://example.org/ns/shop/sa/admin"
    return {
        "two-cert-keys-in-one-element": f"{envoy};Cert={cert};Cert={other}",
        "cert-and-chain-disagree": f"{envoy};Cert={other};Chain={cert}",
        "uri-claims-another-id": f"{envoy};URI={admin_id};Cert={cert}",
        "uri-percent-encoded": f"{envoy};URI={urllib.parse.quote(WEB, safe='')};Cert={cert}",
        "hash-of-another-certificate": (
            f"{envoy};Hash={hashlib.sha256(admin[0]).hexdigest()};Cert={cert}"
        ),
        "hash-truncated": f"{envoy};Hash={hashlib.sha256(honest[0]).hexdigest()[:32]};Cert={cert}",
        "cert-double-percent-encoded": f'{envoy};Cert="{urllib.parse.quote(encoded, safe="")}"',
        "cert-percent-encoding-non-ascii": f'{envoy};Cert="{encoded}%C3%A9"',
        # Envoy writes URI unquoted: a quoted one smuggling a second element is one value
        "uri-smuggling-an-element": f'{envoy};URI="{WEB},Cert={other}";Cert={cert}',
        # a comma ends the proxy's element: what follows is an element, checked as well
        "element-split-by-a-comma": f"{envoy};URI={WEB},x;Cert={other};URI={WEB}",
        "semicolon-inside-unquoted-cert": f"{envoy};Cert={encoded[:40]};x{encoded[40:]}",
        "unterminated-quote": f"{envoy};Cert={cert[:-1]}",
        "oversized": f'{envoy};Subject="{"a" * 20_000}";Cert={cert}',
        "two-elements-one-inconsistent": f"{envoy};URI={admin_id};Cert={cert},{envoy};Cert={cert}",
    }


ATTACK_NAMES = list(_header_attacks([b""], [b""]))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_a_crafted_xfcc_header_from_a_trusted_proxy_is_malformed(
    name: str, world: World, honest: list[bytes], admin: list[bytes]
) -> None:
    with pytest.raises(MalformedCredentials):
        forwarded(world, _header_attacks(honest, admin)[name])


def test_the_header_attacks_start_from_a_header_that_is_accepted(
    world: World, honest: list[bytes]
) -> None:
    envoy = "By=spiffe://example.org/ns/mesh/sa/envoy"
    digest = hashlib.sha256(honest[0]).hexdigest().upper()
    cert = _quoted_pem(honest)
    for header in (f"{envoy};Cert={cert}", f"{envoy};Hash={digest};URI={WEB};Cert={cert}"):
        result = forwarded(world, header)
        assert str(result.principal.subject) == WEB  # type: ignore[attr-defined]


def test_the_last_element_is_the_client_of_the_closest_proxy(
    world: World, honest: list[bytes], admin: list[bytes]
) -> None:
    """A client sending an XFCC header of its own, which a proxy appends to, names its own
    certificate first: only the element of the proxy closest to the application counts."""
    header = f"{xfcc(admin)},{xfcc(honest)}"
    result = forwarded(world, header)
    assert str(result.principal.subject) == WEB  # type: ignore[attr-defined]


def test_quotes_commas_and_semicolons_inside_quoted_values_are_literal(
    world: World, honest: list[bytes]
) -> None:
    header = xfcc(honest, Subject='"CN=a\\"b,c;d=e"', By='"spiffe://x;y,z"')
    result = forwarded(world, header)
    assert str(result.principal.subject) == WEB  # type: ignore[attr-defined]


def test_a_forwarded_header_from_an_untrusted_address_is_ignored_and_noted(
    world: World, admin: list[bytes]
) -> None:
    result = forwarded(world, xfcc(admin), remote_addr="203.0.113.9")
    assert result.principal is None  # type: ignore[attr-defined]
    assert result.notes == ("forwarded_cert_ignored_untrusted_peer",)  # type: ignore[attr-defined]
