"""Integrity check of saved artifacts before they are loaded: a clear error instead of a parser's."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open


def check_saved_directory(directory: str | Path, required: tuple[str, ...], writer: str) -> None:
    """Raise ``ValueError`` if a local saved ``directory`` has no file matching one of the ``required``
    glob patterns, or holds a JSON or safetensors file that does not parse (incomplete or corrupt).
    Paths that are not local directories (hub ids) are left to the loader."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    hint = f"it was written by {writer}; save it again"
    for pattern in required:
        if not any(directory.glob(pattern)):
            raise ValueError(f"{directory / pattern} is missing: the saved directory is incomplete ({hint})")
    for path in sorted(directory.glob("*.json")) + sorted(directory.glob("*.safetensors")):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            else:
                with safe_open(str(path), framework="pt"):  # parses the header, checks the file length
                    pass
        except (ValueError, UnicodeDecodeError, SafetensorError) as err:
            raise ValueError(f"{path} is incomplete or corrupt ({err}); {hint}") from err
