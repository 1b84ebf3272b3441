"""Secret references: how options name a secret without containing it.

A secret option holds a *reference*, never the value, so the value cannot end up in the command line, the pipeline
options, the job graph, the Dataflow UI or a log line. Two kinds:

- ``env:NAME`` — the environment variable ``NAME`` of the process that needs the secret (the launcher for start-up
  checks; the worker that uses it);
- ``projects/PROJECT/secrets/SECRET/versions/VERSION`` — a Google Secret Manager secret version (``VERSION`` a
  number or ``latest``), read with the caller's Google credentials (Beam's ``GcpSecret``, google-cloud-secret-manager).

Anything else is refused with a message that names the option but never repeats the value (it may be the secret
itself). The value is resolved where it is used: a DoFn's ``setup`` (Python), or the Kafka client inside the Java
worker (``${env:NAME}`` through Kafka's ``EnvVarConfigProvider``; see ``transforms/io/kafka_security.py``).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

ENV = "env"
SECRET_MANAGER = "secret_manager"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
# Project ids (or numbers), secret ids and versions as Secret Manager names them.
_SECRET_VERSION = re.compile(
    r"projects/(?P<project>[a-z][-a-z0-9]{4,28}[a-z0-9]|[0-9]{1,20})/secrets/(?P<secret>[A-Za-z0-9_-]{1,255})"
    r"/versions/(?P<version>[1-9][0-9]{0,18}|latest)"
)

FORMS = "env:NAME or projects/PROJECT/secrets/SECRET/versions/VERSION"


class SecretError(ValueError):
    """A secret reference that is malformed or cannot be resolved; the message never holds the secret."""


class SecretRef(NamedTuple):
    kind: str  # ENV or SECRET_MANAGER
    name: str  # the variable name, or the full secret version name

    def __str__(self) -> str:
        return f"env:{self.name}" if self.kind == ENV else self.name


def parse_secret_ref(text: str) -> SecretRef:
    """``env:NAME`` or ``projects/P/secrets/S/versions/V`` -> SecretRef; SecretError (without the text) otherwise."""
    value = (text or "").strip()
    if value.startswith("env:"):
        name = value[len("env:") :]
        if not _ENV_NAME.fullmatch(name):
            raise SecretError(f"env: must name an environment variable ({FORMS}); letters, digits and _ only")
        return SecretRef(ENV, name)
    if value.startswith("projects/"):
        if not _SECRET_VERSION.fullmatch(value):
            raise SecretError(
                f"not a Secret Manager version name: the form is projects/PROJECT/secrets/SECRET/versions/VERSION "
                f"(VERSION a number or latest), got {value!r}"  # a malformed *name*, no secret in it
            )
        return SecretRef(SECRET_MANAGER, value)
    # Deliberately not repeated: a plain value here is most likely the secret itself.
    raise SecretError(
        f"must be a secret reference ({FORMS}), not a plain value: a value given on the command line ends up in "
        "shell history, process lists, the pipeline options and the job's UI"
    )


def resolve_secret(ref: SecretRef) -> bytes:
    """The secret's bytes: the variable's value (UTF-8), or the Secret Manager version's payload.

    SecretError names the reference (never the value) when it cannot be read or is empty.
    """
    if ref.kind == ENV:
        value = os.environ.get(ref.name)
        if not value:
            raise SecretError(f"environment variable {ref.name} is not set (or empty) for {ref}")
        return value.encode("utf-8")
    from apache_beam.utils.secret import GcpSecret

    try:
        data = GcpSecret(ref.name).get_secret_bytes()
    except RuntimeError as exc:
        raise SecretError(f"cannot read {ref}: {_first_line(str(exc))}") from None
    if not data:
        raise SecretError(f"{ref} is empty")
    return bytes(data)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:limit]
