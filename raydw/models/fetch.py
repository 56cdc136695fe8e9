"""`raydw fetch`: download a registry entry, check its hash, convert it and cache the plain state dict.

The cache holds `<name>.pt` (converted, weights-only) and `<name>.json` (source URL, both hashes, format).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from raydw.models.catalog import cache_path, fetch_command, get_pretrained, model_cache, sha256_prefix
from raydw.models.convert import CheckpointError, convert_file

class FetchError(RuntimeError):
    pass


def _download(url: str, dst: Path, timeout: float = 60.0) -> str:
    """Stream `url` to `dst`, hashing on the way; return the sha256."""
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as r, open(dst, "wb") as f:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def check_hash(got: str, url: str, want: str | None) -> None:
    """The entry's full sha256 where known; else the prefix the file name carries (torch.hub's rule)."""
    if want and got != want:
        raise FetchError(f"{url}: sha256 {got}, expected {want} (registry); the download was deleted")
    prefix = sha256_prefix(url)
    if prefix and not got.startswith(prefix):
        raise FetchError(f"{url}: sha256 {got} does not start with {prefix}, the hash prefix in its file name; "
                         "the download was deleted")


def fetch(name: str, cache: str | Path | None = None, url: str | None = None, trust: bool = False,
          force: bool = False, log=print) -> Path:
    """Put registry entry `name` into `cache` (default: the model cache, $RAYDW_MODEL_CACHE or
    ~/.cache/raydw/models) as `<name>.pt`; return that path."""
    entry = get_pretrained(name)
    cache = Path(cache).expanduser() if cache else model_cache()
    out = cache_path(name, cache)
    if out.exists() and not force:
        log(f"{name}: already cached at {out}")
        return out
    if url is None and not entry.direct:
        raise FetchError(f"{name}: published at {entry.urls[0]}, which is not a direct download; "
                         + fetch_command(name))
    cache.mkdir(parents=True, exist_ok=True)
    part = cache / f"{name}.download"
    errors = []
    for u in [url] if url else list(entry.urls):
        log(f"{name}: downloading {u}")
        try:
            got = _download(u, part)
        except (urllib.error.URLError, OSError, ValueError) as e:  # try the next mirror
            errors.append(f"{u}: {type(e).__name__}: {e}")
            part.unlink(missing_ok=True)
            continue
        try:
            check_hash(got, u, entry.sha256)
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        return _convert_arrival(name, entry, u, got, part, out, trust, log)
    raise FetchError(f"{name}: no URL could be downloaded ({'; '.join(errors)}); without a network, download the "
                     f"file elsewhere and run `raydw fetch {name} --url file:///PATH/TO/FILE`")


def _convert_arrival(name, entry, url, got, part, out, trust, log) -> Path:
    try:
        info = convert_file(part, out, fmt=entry.format, arch=entry.arch, trust=trust)
    except CheckpointError as e:
        kept = part.with_name(f"{name}.published")
        shutil.move(part, kept)
        checked = "hash-checked" if entry.sha256 or sha256_prefix(url) else \
            f"not hash-checked (no published hash is known; its sha256 is {got})"
        why = str(e).replace(str(part), str(kept))  # the error names the file by the name it has now
        raise FetchError(f"{name}: downloaded ({checked}), but not converted: {why}. The download is kept at "
                         f"{kept}; rerun `raydw fetch {name} --url file://{kept} --trust` only if you trust it "
                         "(--trust unpickles it: a pickle can run code)") from None
    part.unlink(missing_ok=True)
    record = {"name": name, "url": url, "published_sha256": got, "sha256": info["sha256"], "format": entry.format,
              "arch": entry.arch, "normalizer": info["normalizer"],
              "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"{name}: published sha256 {got}\n{name}: converted to {out} (sha256 {info['sha256']})")
    return out
