"""RFC 7517 Appendix A and B: the published JWK and JWK Set examples.

The signing keys of these examples are read; the encryption key (``use: enc``), the private
keys in a set of public keys, and the symmetric keys are skipped, each with its reason.
"""

from __future__ import annotations

import base64

import pytest
from cryptography import x509

from zerotrust.errors import ConfigurationError
from zerotrust.tokens import JWK, JWKSet, PrivateJWK

# RFC 7517 A.1 (and A.2): the RSA modulus shared by the examples (also RFC 7638 3.1's key)
RSA_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
    "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
    "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
    "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
EC_PUBLIC = {
    "kty": "EC",
    "crv": "P-256",
    "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
    "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
    "use": "enc",
    "kid": "1",
}
RSA_PUBLIC = {"kty": "RSA", "n": RSA_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}

# RFC 7517 A.1: "Example Public Keys"
A1 = {"keys": [EC_PUBLIC, RSA_PUBLIC]}

# RFC 7517 A.2: "Example Private Keys"
EC_PRIVATE = {**EC_PUBLIC, "d": "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}
RSA_PRIVATE = {
    **RSA_PUBLIC,
    "d": (
        "X4cTteJY_gn4FYPsXB8rdXix5vwsg1FLN5E3EaG6RJoVH-HLLKD9M7dx5oo7GURknchnrRweUkC7hT5fJLM0WbFA"
        "KNLWY2vv7B6NqXSzUvxT0_YSfqijwp3RTzlBaCxWp4doFk5N2o8Gy_nHNKroADIkJ46pRUohsXywbReAdYaMwFs9"
        "tv8d_cPVY3i07a3t8MN6TNwm0dSawm9v47UiCl3Sk5ZiG7xojPLu4sbg1U2jx4IBTNBznbJSzFHK66jT8bgkuqsk"
        "0GjskDJk19Z4qwjwbsnn4j2WBii3RL-Us2lGVkY8fkFzme1z0HbIkfz0Y6mqnOYtqc0X4jfcKoAC8Q"
    ),
    "p": (
        "83i-7IvMGXoMXCskv73TKr8637FiO7Z27zv8oj6pbWUQyLPQBQxtPVnwD20R-60eTDmD2ujnMt5PoqMrm8RfmNhV"
        "WDtjjMmCMjOpSXicFHj7XOuVIYQyqVWlWEh6dN36GVZYk93N8Bc9vY41xy8B9RzzOGVQzXvNEvn7O0nVbfs"
    ),
    "q": (
        "3dfOR9cuYq-0S-mkFLzgItgMEfFzB2q3hWehMuG0oCuqnb3vobLyumqjVZQO1dIrdwgTnCdpYzBcOfW5r370AFXj"
        "iWft_NGEiovonizhKpo9VVS78TzFgxkIdrecRezsZ-1kYd_s1qDbxtkDEgfAITAG9LUnADun4vIcb6yelxk"
    ),
    "dp": (
        "G4sPXkc6Ya9y8oJW9_ILj4xuppu0lzi_H7VTkS8xj5SdX3coE0oimYwxIi2emTAue0UOa5dpgFGyBJ4c8tQ2VF40"
        "2XRugKDTP8akYhFo5tAA77Qe_NmtuYZc3C3m3I24G2GvR5sSDxUyAN2zq8Lfn9EUms6rY3Ob8YeiKkTiBj0"
    ),
    "dq": (
        "s9lAH9fggBsoFR8Oac2R_E2gw282rT2kGOAhvIllETE1efrA6huUUvMfBcMpn8lqeW6vzznYY5SSQF7pMdC_agI3"
        "nG8Ibp1BUb0JUiraRNqUfLhcQb_d9GF4Dh7e74WbRsobRonujTYN1xCaP6TO61jvWrX-L18txXw494Q_cgk"
    ),
    "qi": (
        "GyM_p6JrXySiz1toFgKbWV-JdI3jQ4ypu9rbMWx3rQJBfmt0FoYzgUIZEVFEcOqwemRN81zoDAaa-Bk0KWNGDjJH"
        "ZDdDmFhW3AN7lI-puxk_mHZGJ11rxyR8O55XLSe3SPmRfKwZI6yU24ZxvQKFYItdldUKGzO6Ia6zTKhAVRU"
    ),
}
A2 = {"keys": [EC_PRIVATE, RSA_PRIVATE]}

# RFC 7517 A.3: "Example Symmetric Keys"
A3 = {
    "keys": [
        {"kty": "oct", "alg": "A128KW", "k": "GawgguFyGrWKav7AX4VKUg"},
        {
            "kty": "oct",
            "k": (
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1"
                "Z9CAow"
            ),
            "kid": "HMAC key used in JWS spec Appendix A.1 example",
        },
    ]
}

# RFC 7517 Appendix B: "Example Use of "x5c" (X.509 Certificate Chain) Parameter"
B_X5C = (
    "MIIDQjCCAiqgAwIBAgIGATz/FuLiMA0GCSqGSIb3DQEBBQUAMGIxCzAJBgNVBAYTAlVTMQswCQYDVQQIEwJDTzEPMA0G"
    "A1UEBxMGRGVudmVyMRwwGgYDVQQKExNQaW5nIElkZW50aXR5IENvcnAuMRcwFQYDVQQDEw5CcmlhbiBDYW1wYmVsbDAe"
    "Fw0xMzAyMjEyMzI5MTVaFw0xODA4MTQyMjI5MTVaMGIxCzAJBgNVBAYTAlVTMQswCQYDVQQIEwJDTzEPMA0GA1UEBxMG"
    "RGVudmVyMRwwGgYDVQQKExNQaW5nIElkZW50aXR5IENvcnAuMRcwFQYDVQQDEw5CcmlhbiBDYW1wYmVsbDCCASIwDQYJ"
    "KoZIhvcNAQEBBQADggEPADCCAQoCggEBAL64zn8/QnHYMeZ0LncoXaEde1fiLm1jHjmQsF/449IYALM9if6amFtPDy2y"
    "vz3YlRij66s5gyLCyO7ANuVRJx1NbgizcAblIgjtdf/u3WG7K+IiZhtELto/A7Fck9Ws6SQvzRvOE8uSirYbgmj6He4i"
    "O8NCyvaK0jIQRMMGQwsU1quGmFgHIXPLfnpnfajr1rVTAwtgV5LEZ4Iel+W1GC8ugMhyr4/p1MtcIM42EA8BzE6ZQqC7"
    "VPqPvEjZ2dbZkaBhPbiZAS3YeYBRDWm1p1OZtWamT3cEvqqPpnjL1XyW+oyVVkaZdklLQp2Btgt9qr21m42f4wTw+Xrp"
    "6rCKNb0CAwEAATANBgkqhkiG9w0BAQUFAAOCAQEAh8zGlfSlcI0o3rYDPBB07aXNswb4ECNIKG0CETTUxmXl9KUL+9gG"
    "lqCz5iWLOgWsnrcKcY0vXPG9J1r9AqBNTqNgHq2G03X09266X5CpOe1zFo+Owb1zxtp3PehFdfQJ610CDLEaS9V9Rqp1"
    "7hCyybEpOGVwe8fnk+fbEL2Bo3UPGrpsHzUoaGpDftmWssZkhpBJKVMJyf/RuP2SmmaIzmnw9JiSlYhzo4tpzd5rFXhj"
    "Rbg4zW9C+2qok+2+qDM1iJ684gPHMIY8aLWrdgQTxkumGmTqgawR+N5MDtdPTEQ0XfIBc2cJEUyMTY5MPvACWpkA6SdS"
    "4xSvdXK3IVfOWA=="
)
B = {
    "kty": "RSA",
    "use": "sig",
    "kid": "1b94c",
    "n": (
        "vrjOfz9Ccdgx5nQudyhdoR17V-IubWMeOZCwX_jj0hgAsz2J_pqYW08PLbK_PdiVGKPrqzmDIsLI7sA25VEnHU1u"
        "CLNwBuUiCO11_-7dYbsr4iJmG0Qu2j8DsVyT1azpJC_NG84Ty5KKthuCaPod7iI7w0LK9orSMhBEwwZDCxTWq4aY"
        "WAchc8t-emd9qOvWtVMDC2BXksRngh6X5bUYLy6AyHKvj-nUy1wgzjYQDwHMTplCoLtU-o-8SNnZ1tmRoGE9uJkB"
        "Ldh5gFENabWnU5m1ZqZPdwS-qo-meMvVfJb6jJVWRpl2SUtCnYG2C32qvbWbjZ_jBPD5eunqsIo1vQ"
    ),
    "e": "AQAB",
    "x5c": [B_X5C],
}

# RFC 7638 3.1: the thumbprint of the A.1 RSA key
RSA_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_a1_public_keys_the_signing_key_is_read_and_the_encryption_key_skipped() -> None:
    key_set = JWKSet.from_dict(A1)
    assert [key.kid for key in key_set] == ["2011-04-29"]
    rsa_key = key_set.get("2011-04-29")
    assert rsa_key is not None
    assert (rsa_key.kty, rsa_key.algorithm) == ("RSA", "RS256")
    assert rsa_key.thumbprint() == RSA_THUMBPRINT
    [skipped] = key_set.skipped
    assert (skipped.index, skipped.kid) == (0, "1")
    assert "use" in skipped.reason


def test_a1_ec_key_is_a_valid_point_but_not_a_signing_key() -> None:
    with pytest.raises(ConfigurationError, match="use"):
        JWK.from_dict(EC_PUBLIC)
    members = {name: value for name, value in EC_PUBLIC.items() if name != "use"}
    assert JWK.from_dict(members).algorithm == "ES256"


def test_a2_private_keys_are_never_read_as_public_keys() -> None:
    key_set = JWKSet.from_dict(A2)
    assert len(key_set) == 0
    assert [(s.index, s.kid) for s in key_set.skipped] == [(0, "1"), (1, "2011-04-29")]
    assert all("private" in s.reason for s in key_set.skipped)
    for entry in A2["keys"]:
        with pytest.raises(ConfigurationError, match="private"):
            JWK.from_dict(entry)


def test_a2_rsa_private_key_with_crt_members() -> None:
    key = PrivateJWK.from_dict(RSA_PRIVATE)
    assert (key.algorithm, key.kid) == ("RS256", "2011-04-29")
    assert key.public().thumbprint() == RSA_THUMBPRINT
    assert key.public() == JWK.from_dict(RSA_PUBLIC)


def test_a2_ec_private_key_matches_its_public_members() -> None:
    members = {name: value for name, value in EC_PRIVATE.items() if name != "use"}
    public = {name: value for name, value in EC_PUBLIC.items() if name != "use"}
    assert PrivateJWK.from_dict(members).public() == JWK.from_dict(public)
    with pytest.raises(ConfigurationError, match="use"):  # an encryption key signs nothing
        PrivateJWK.from_dict(EC_PRIVATE)


def test_a3_symmetric_keys_never_come_out_of_a_key_set() -> None:
    key_set = JWKSet.from_dict(A3)
    assert len(key_set) == 0
    assert [(s.index, s.kid) for s in key_set.skipped] == [
        (0, None),
        (1, "HMAC key used in JWS spec Appendix A.1 example"),
    ]
    for entry in A3["keys"]:
        with pytest.raises(ConfigurationError, match="SecretKey"):
            JWK.from_dict(entry)


def test_b_x5c_member_the_key_is_the_certificates() -> None:
    key = JWK.from_dict(B)
    assert (key.kty, key.algorithm, key.kid, key.use) == ("RSA", "RS256", "1b94c", "sig")
    certificate = x509.load_der_x509_certificate(base64.b64decode(B_X5C))
    assert key.public_key.public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]
    assert JWK.from_public_key(certificate).thumbprint() == key.thumbprint()
    assert JWKSet.from_dict({"keys": [B]}).get("1b94c") == key
