"""Checked, atomic downloads with urllib: a temp file in the target folder, SHA-256, os.replace."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

CHUNK_BYTES = 1 << 20


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 differs from the catalog's."""


class DownloadError(ConnectionError):
    """A download failed: network error, timeout or an HTTP error status."""


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, sha256: str, *, timeout: float = 60.0) -> Path:
    """Download url to dest, checking its SHA-256; dest appears only when the check passes.

    The data go to a temp file next to dest, which replaces dest atomically once verified and is
    deleted on any failure. Raises DownloadError (naming url) when the network fails and
    ChecksumError (naming the file and both hashes) on a mismatch.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            actual = _stream(url, file, timeout=timeout, label=dest.name)
        if actual != sha256:
            raise ChecksumError(
                f"Checksum mismatch for {dest.name} downloaded from {url}: "
                f"expected sha256 {sha256}, got {actual}. The file was not saved."
            )
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    return dest


def _stream(url: str, file: BinaryIO, *, timeout: float, label: str) -> str:
    """Copy url's body into file with a progress bar; return the body's hex SHA-256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=None) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    file.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"Download of {url} failed: HTTP {error.code} {error.reason}."
        ) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"Download of {url} failed: {reason}.") from error
    return digest.hexdigest()
