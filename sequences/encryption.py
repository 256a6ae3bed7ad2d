"""Secrets at rest (mailbox passwords, OAuth tokens and client secrets): Fernet tokens
(AES-128-CBC with HMAC-SHA256, from `cryptography`) under the keys of
`SEQUENCES_ENCRYPTION_KEYS`.

The variable lists Fernet keys separated by commas (`sequences admin new-encryption-key` makes
one). The first encrypts; every one of them decrypts (MultiFernet), so a key is rotated by
putting a new one first and keeping the old one after it until `sequences admin
rotate-secrets` has re-encrypted every stored secret under the new one.
"""

from __future__ import annotations

import json
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from sequences.config import ConfigError

ENV = "SEQUENCES_ENCRYPTION_KEYS"


class SecretsUnreadable(Exception):
    """A stored secret none of the configured keys opens (a key removed too early)."""


class SecretBox:
    """Without keys (the variable unset) nothing can be sealed or opened: a system that stores
    no mailbox needs none."""

    def __init__(self, keys: list[str]):
        self._fernet: MultiFernet | None = None
        if not keys:
            return
        try:
            self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])
        except ValueError:
            raise ConfigError(f"{ENV}: each key must be a Fernet key (32 url-safe base64 bytes;"
                              " `sequences admin new-encryption-key` makes one)") from None

    @classmethod
    def from_env(cls) -> SecretBox:
        keys = os.environ.get("SEQUENCES_ENCRYPTION_KEYS", "")
        return cls([k for k in keys.split(",") if k.strip()])

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, secrets: dict[str, str | None]) -> str:
        """The secrets (the ones set) as one token, under the first key."""
        kept = {name: value for name, value in secrets.items() if value}
        return self._keys().encrypt(json.dumps(kept).encode()).decode()

    def open(self, token: str) -> dict[str, str]:
        try:
            return json.loads(self._keys().decrypt(token.encode()))
        except InvalidToken:
            raise SecretsUnreadable("no key of SEQUENCES_ENCRYPTION_KEYS opens this secret"
                                    " (was its key removed before rotate-secrets?)") from None

    def rotate(self, token: str) -> str:
        """The same secrets under the first key."""
        try:
            return self._keys().rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretsUnreadable("no key of SEQUENCES_ENCRYPTION_KEYS opens this secret")

    def _keys(self) -> MultiFernet:
        if self._fernet is None:
            raise NoKeys(f"{ENV} is not set: mailbox secrets cannot be stored or read"
                         " (see the README, 'Configuration')")
        return self._fernet


class NoKeys(SecretsUnreadable):
    """No key is configured at all."""
