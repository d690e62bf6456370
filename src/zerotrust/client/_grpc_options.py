"""The grpc channel options of a zerotrust channel: the caller's, checked, and its own.

Options that would change what the identity checks rely on are refused, however their name is
spelt (``str`` or ``bytes``; grpc hands names to its C core, which would stop at a NUL):

* the name grpc matches against the server certificate's DNS SANs
  (``grpc.ssl_target_name_override``, ``grpc.default_authority``): use ``server_name=``;
* grpc's own retries (``grpc.enable_retries``; a ``retryPolicy`` or ``hedgingPolicy`` in a
  service config): they would send a call again over a connection no check covered;
* load balancing over several connections (``grpc.lb_policy_name``, a service config's
  ``loadBalancingPolicy`` / ``loadBalancingConfig``) other than ``pick_first``: the channel's
  state would stay ``READY`` while one of them is replaced, so the check could not see it.
  For the same reason the channel takes no service config from DNS
  (``grpc.service_config_disable_resolution``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from zerotrust._config_sources import DuplicateKey, json_document
from zerotrust.errors import ConfigurationError

__all__ = ["channel_options"]

_NAME = "changes the name grpc checks against the server certificate: use server_name="
#: Options refused by name, and why.
_REFUSED: Final = {
    "grpc.ssl_target_name_override": _NAME,
    "grpc.default_authority": _NAME,
    "grpc.enable_retries": "is set by the channel (grpc's own retries are off): use retry=",
    "grpc.service_config_disable_resolution": "is set by the channel",
}
_MAX_SERVICE_CONFIG: Final = 64 * 1024
_RETRIES: Final = ("retryPolicy", "hedgingPolicy")
_PICK_FIRST: Final = "pick_first"


def _text(value: object, what: str) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(f"{what} must be UTF-8") from None
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string")
    if "\x00" in value:
        raise ConfigurationError(f"{what} contains NUL")
    return value


def channel_options(
    options: Sequence[tuple[Any, Any]], server_name: str | None
) -> list[tuple[str, Any]]:
    """The caller's ``options`` (names as ``str``), checked, followed by the channel's own."""
    given: list[tuple[str, Any]] = []
    for option in options:
        if not isinstance(option, tuple) or len(option) != 2:
            raise ConfigurationError("options must be (name, value) pairs")
        name = _text(option[0], "a channel option name")
        value = option[1]
        if name in _REFUSED:
            raise ConfigurationError(f"{name} {_REFUSED[name]} (see the docs)")
        if name == "grpc.lb_policy_name" and _text(value, name) != _PICK_FIRST:
            raise ConfigurationError(f"{name}: only {_PICK_FIRST} can be used (see the docs)")
        if name == "grpc.service_config":
            value = _text(value, name)
            check_service_config(value)
        given.append((name, value))
    ours: list[tuple[str, Any]] = [
        # grpc's own retries (service config, transparent) would send a call again over a
        # connection no identity check covered: the interceptors retry instead
        ("grpc.enable_retries", 0),
        ("grpc.service_config_disable_resolution", 1),
    ]
    if server_name is not None:
        ours.append(("grpc.ssl_target_name_override", server_name))
    return given + ours


def check_service_config(text: str) -> None:
    """Refuse a service config that grpc would not apply as read here (too large, not a JSON
    object, a key named twice) or that retries, hedges or balances over several connections."""
    if len(text) > _MAX_SERVICE_CONFIG:
        raise ConfigurationError("grpc.service_config is longer than 64 KiB")
    try:
        config = json_document(text)
    except DuplicateKey as exc:
        raise ConfigurationError(f"grpc.service_config: {exc}") from None
    except (ValueError, RecursionError):
        raise ConfigurationError("grpc.service_config is not valid JSON") from None
    if not isinstance(config, dict):
        raise ConfigurationError("grpc.service_config must be a JSON object")
    methods = config.get("methodConfig", [])
    if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods):
        raise ConfigurationError("grpc.service_config: methodConfig must be a list of objects")
    for key in (*_RETRIES, "retryThrottling"):
        if key in config or any(key in method for method in methods):
            raise ConfigurationError(
                f"grpc.service_config: {key} cannot be used: grpc's own retries are off on"
                " zerotrust channels (they would send a call again over a connection no"
                " identity check covered); use retry=RetryPolicy(...)"
            )
    policy = config.get("loadBalancingPolicy")
    balancing = config.get("loadBalancingConfig", [])
    if (policy is not None and (not isinstance(policy, str) or policy.lower() != _PICK_FIRST)) or (
        not isinstance(balancing, list)
        or not all(isinstance(entry, dict) and set(entry) <= {_PICK_FIRST} for entry in balancing)
    ):
        raise ConfigurationError(
            f"grpc.service_config: only the {_PICK_FIRST} load-balancing policy can be used"
            " (see the docs)"
        )
