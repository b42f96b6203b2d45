"""The JSON form every family's config dataclass shares."""

from __future__ import annotations

import dataclasses
from typing import Any, Self


class JsonConfig:
    """Mixin for a config dataclass: `to_dict` gives a JSON-ready dict, `from_dict` rebuilds
    the config from it and refuses unknown keys by name."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Inverse of `to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**values)
