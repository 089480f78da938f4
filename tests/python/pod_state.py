"""The pod's private state directory: the secrets keyward reads (generated here, written to
0600 files in a 0700 directory, never printed), the client's key header, keyward's config
and the stand-in's record of requests."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets as secrets_mod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLIENT_ID = "local"
CLIENT_SECRET = "mcp-client-local"
APIM_SECRET = "apim-subscription-key"
SECRET_NAMES = (CLIENT_SECRET, APIM_SECRET)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write_private(path: Path, text: str) -> None:
    """Writes `text` to `path` with mode 0600 from the first byte on (replacing atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(tmp, path)


def new_key() -> str:
    """32 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets_mod.token_bytes(32)).rstrip(b"=").decode()


@dataclass(frozen=True)
class State:
    """The pod's private state directory; with `shared_secrets`, another one's secrets
    directory instead of its own (a second keyward of the same deployment)."""

    dir: Path
    shared_secrets: Path | None = None

    @property
    def secrets_dir(self) -> Path:
        return self.shared_secrets or self.dir / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def client_header(self) -> Path:
        return self.dir / "client.header"

    @property
    def config(self) -> Path:
        return self.dir / "keyward.toml"

    @property
    def record(self) -> Path:
        return self.dir / "health-api.requests.jsonl"

    def secret_file(self, name: str) -> Path:
        return self.secrets_dir / name

    def ensure(self, extra: Iterable[str] = ()) -> bool:
        """Creates the directories and any missing secret (SECRET_NAMES and the `extra` ones);
        returns whether a secret was made."""
        _private_dir(self.dir)
        _private_dir(self.secrets_dir)
        _private_dir(self.logs_dir)
        made = False
        for name in (*SECRET_NAMES, *extra):
            file = self.secret_file(name)
            if not file.exists() or not file.read_text().strip():
                _write_private(file, new_key() + "\n")
                made = True
            os.chmod(file, 0o600)
        header = f"X-Api-Key: {self.secret(CLIENT_SECRET)}\n"
        if not self.client_header.exists() or self.client_header.read_text() != header:
            _write_private(self.client_header, header)
        os.chmod(self.client_header, 0o600)
        return made

    def secret(self, name: str) -> str:
        return self.secret_file(name).read_text().strip()

    def secret_values(self) -> list[str]:
        return [self.secret(name) for name in SECRET_NAMES]


def secret_forms(value: str) -> list[str]:
    """A key as stored, and the other ways its bytes could be written in a log."""
    forms = {value}
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raw = b""
    if raw:
        forms.add(raw.hex())
        forms.add(raw.hex().upper())
        forms.add(base64.b64encode(raw).decode().rstrip("="))
    forms.add(base64.b64encode(value.encode()).decode().rstrip("="))
    return sorted(forms)
