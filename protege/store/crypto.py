"""Encryption at rest of request/response payloads (Fernet: AES-128-CBC + HMAC)."""

from __future__ import annotations

import base64
import hashlib

PREFIX = "fernet:"


class EncryptionError(Exception):
    """A payload could not be encrypted or decrypted (missing or wrong key)."""


class PayloadCipher:
    """Wraps a Fernet key. A value that is not a Fernet key is treated as a
    passphrase and stretched with scrypt, so operators can use either."""

    def __init__(self, key: str) -> None:
        from cryptography.fernet import Fernet

        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError):
            derived = hashlib.scrypt(
                key.encode(), salt=b"protege-payload-v1", n=2**14, r=8, p=1, dklen=32
            )
            self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    @staticmethod
    def generate_key() -> str:
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()

    def encrypt(self, text: str) -> str:
        return PREFIX + self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        if not token.startswith(PREFIX):
            raise EncryptionError("payload is not encrypted")
        try:
            return self._fernet.decrypt(token[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise EncryptionError(
                "cannot decrypt payload: PROTEGE_ENCRYPTION_KEY does not match the key it was "
                "written with"
            ) from exc
