"""DRF authentication: management keys (Bearer, or HTTP Basic with the key as the password),
service tokens (Bearer), and the portal session. An inference key is refused with 401 here:
it only works on the gateway."""

import base64
import binascii
from dataclasses import dataclass

from rest_framework import authentication, exceptions

from keys.hashing import SecretKind, kind_of
from keys.models import ManagementKey, ServiceToken
from keys.selectors import active_management_key, active_service_token, touch_last_used


@dataclass
class PlatformUser:
    """The platform itself (the LLM gateway), authenticated by a service token."""

    token: ServiceToken
    is_authenticated: bool = True
    is_active: bool = True
    is_superuser: bool = False
    is_staff: bool = False

    def get_username(self) -> str:
        return f"service:{self.token.name}"


def _credential(secret: str):
    kind = kind_of(secret)
    if kind is SecretKind.MANAGEMENT:
        key = active_management_key(secret)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked management key.")
        touch_last_used(ManagementKey, key.pk)
        return key.member.user, key
    if kind is SecretKind.SERVICE:
        token = active_service_token(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked service token.")
        touch_last_used(ServiceToken, token.pk, process_local=True)
        return PlatformUser(token), token
    if kind is SecretKind.INFERENCE:
        raise exceptions.AuthenticationFailed("Inference keys work only on the gateway endpoints.")
    raise exceptions.AuthenticationFailed("Unrecognized credential.")


class BearerKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization: Bearer takes exactly one key.")
        try:
            secret = header[1].decode()
        except UnicodeDecodeError as error:
            raise exceptions.AuthenticationFailed("The key is not valid text.") from error
        return _credential(secret)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class BasicKeyAuthentication(authentication.BaseAuthentication):
    """HTTP Basic with any user name and the management key as the password (Weave's clients)."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"basic":
            return None
        try:
            _user, _, secret = base64.b64decode(header[1], validate=True).decode().partition(":")
        except (IndexError, binascii.Error, UnicodeDecodeError) as error:
            raise exceptions.AuthenticationFailed("Malformed HTTP Basic credentials.") from error
        return _credential(secret)


