"""Where a certificate is deployed: file targets and hooks, as the API takes them."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

FileKind = Literal["cert", "chain", "fullchain", "privkey", "combined", "pkcs12"]

DEFAULT_FILES: tuple[FileKind, ...] = ("cert", "chain", "fullchain", "privkey")
DEFAULT_FILE_NAMES: dict[str, str] = {
    "cert": "cert.pem",
    "chain": "chain.pem",
    "fullchain": "fullchain.pem",
    "privkey": "privkey.pem",
    "combined": "combined.pem",
    "pkcs12": "certificate.p12",
}
# Files that hold the private key: created owner-only unless key_mode says
# otherwise, and never readable by others.
KEY_FILES = frozenset({"privkey", "combined", "pkcs12"})
DEFAULT_MODE = 0o644
DEFAULT_KEY_MODE = 0o600
# The widest a key file may be: owner read-write, group read.
MAX_KEY_MODE = 0o640


# Modes are octal text, as chmod and ls show them: a number in JSON is read in
# decimal, so 644 would silently become 0o1204 and 444 the group-writable 0674.
_MODE_TEXT = re.compile(r"0?[0-7]{3}")
# Set as validation context by load_spec: specs stored before modes were kept
# as text hold them as numbers (already the right value), which stay readable.
STORED = "stored"


def _octal(value: object, info: ValidationInfo) -> object:
    if isinstance(value, str):
        if not _MODE_TEXT.fullmatch(value):
            raise ValueError(
                f"give the mode as octal text like '0640' or '640', not {value!r}"
            )
        return int(value, 8)
    if value is None:
        return None
    stored = isinstance(info.context, dict) and info.context.get(STORED) is True
    if stored and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        raise ValueError(
            f"give the mode as octal text like '0640', a string: the number "
            f"{value} is read in decimal, which is {value:04o} in octal"
        )
    raise ValueError("give the mode as octal text like '0640', a string")


def _mode_text(value: int | None) -> str | None:
    return None if value is None else f"{value:04o}"


# A file mode as callers give it and get it back: octal text such as "0640".
_Mode = Annotated[
    int | None,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^0?[0-7]{3}$"},
                {"type": "null"},
            ]
        }
    ),
    PlainSerializer(_mode_text, return_type=str | None, when_used="json"),
]


class FileTarget(BaseModel):
    """A directory that receives the certificate's files."""

    model_config = ConfigDict(extra="forbid")

    directory: str = Field(min_length=2, max_length=1024)
    files: list[FileKind] = Field(
        default_factory=lambda: list(DEFAULT_FILES),
        min_length=1,
    )
    # Other names for some files, e.g. {"fullchain": "server.crt"}.
    file_names: dict[FileKind, str] = Field(default_factory=dict)
    # Owner and group (names or numeric ids); default: kept from the file
    # being replaced, else the daemon's user. A key file keeps nothing from a
    # file owned by anyone but root, the daemon's user or the configured owner.
    owner: str | None = Field(default=None, min_length=1, max_length=256)
    group: str | None = Field(default=None, min_length=1, max_length=256)
    # Modes of certificate files and of files holding the key; default: kept
    # from the file being replaced, else 0644 and 0600.
    mode: _Mode = Field(default=None, ge=0, le=0o777)
    key_mode: _Mode = Field(default=None, ge=0, le=0o777)
    pkcs12_passphrase: SecretStr | None = None

    _mode_octal = field_validator("mode", "key_mode", mode="before")(_octal)

    @field_validator("directory")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "\0" in value or not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return os.path.normpath(value)

    @field_validator("files")
    @classmethod
    def _unique(cls, value: list[FileKind]) -> list[FileKind]:
        if len(set(value)) != len(value):
            raise ValueError("each file kind may be listed once")
        return value

    @field_validator("owner", "group")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("a user or group name cannot contain NUL")
        return value

    @field_validator("file_names")
    @classmethod
    def _base_names(cls, value: dict[FileKind, str]) -> dict[FileKind, str]:
        for kind, name in value.items():
            if not name or "/" in name or "\0" in name or name in (".", ".."):
                raise ValueError(f"{kind}: a file name without '/', not '.' or '..'")
        if len(set(value.values())) != len(value):
            raise ValueError("two files cannot have the same name")
        return value

    @field_validator("key_mode")
    @classmethod
    def _at_most_owner_rw_group_r(cls, value: int | None) -> int | None:
        if value is not None and value & ~MAX_KEY_MODE:
            raise ValueError(
                f"at most 0640 for a key file, not {value:04o}: owner read-write "
                "and group read; never group write, execute, or readable by others"
            )
        return value

    @model_validator(mode="after")
    def _distinct_final_names(self) -> FileTarget:
        # a renamed file may take a default name of another listed file: the
        # second write would replace the first, a key inside a cert's name
        seen: dict[str, str] = {}
        for kind in self.files:
            name = self.name_of(kind)
            if name in seen:
                raise ValueError(
                    f"file_names: {kind} and {seen[name]} would both be "
                    f"written to {name!r}; give one of them another name"
                )
            seen[name] = kind
        return self

    def name_of(self, kind: str) -> str:
        return self.file_names.get(kind, DEFAULT_FILE_NAMES[kind])  # type: ignore[call-overload]

    def path_of(self, kind: str) -> str:
        return os.path.join(self.directory, self.name_of(kind))


class Hook(BaseModel):
    """A command run after the certificate changed; argv, never a shell."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, max_length=64)
    # Seconds before the command is killed; default deploy.hook_timeout.
    timeout: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("argv")
    @classmethod
    def _absolute_program(cls, value: list[str]) -> list[str]:
        if not value[0].startswith("/"):
            raise ValueError("argv[0] must be an absolute path (no PATH lookup)")
        if any("\0" in arg for arg in value):
            raise ValueError("arguments cannot contain NUL")
        return value


class DeploySpec(BaseModel):
    """Every target and hook of one certificate."""

    model_config = ConfigDict(extra="forbid")

    targets: list[FileTarget] = Field(default_factory=list, max_length=16)
    hooks: list[Hook] = Field(default_factory=list, max_length=16)

    @field_validator("targets")
    @classmethod
    def _distinct_directories(cls, value: list[FileTarget]) -> list[FileTarget]:
        directories = [t.directory for t in value]
        if len(set(directories)) != len(directories):
            raise ValueError("each directory may be a target once")
        return value

    @property
    def empty(self) -> bool:
        return not self.targets and not self.hooks

    def stored(self) -> dict[str, Any]:
        """The JSON kept in the store, secrets included."""
        data = self.model_dump(mode="json")
        for target, dumped in zip(self.targets, data["targets"], strict=True):
            if target.pkcs12_passphrase is not None:
                dumped["pkcs12_passphrase"] = (
                    target.pkcs12_passphrase.get_secret_value()
                )
        return data

    def public(self) -> dict[str, Any]:
        """The JSON shown to callers: secrets replaced by whether they are set."""
        data = self.model_dump(mode="json")
        for dumped in data["targets"]:
            dumped["pkcs12_passphrase_set"] = bool(dumped.pop("pkcs12_passphrase"))
        return data


def load_spec(stored: dict[str, Any] | None) -> DeploySpec:
    """The spec kept in the store (an empty one for a certificate without)."""
    return DeploySpec.model_validate(stored or {}, context={STORED: True})
