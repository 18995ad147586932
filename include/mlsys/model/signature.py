"""The pipeline's signature on the models it logs: Ed25519 over the digests of the model's files.

Serving and batch scoring load a model's weights and config themselves (no
pickle, no code from the artifact), and only after this check: a model version
that someone registered outside the pipeline, or whose files were changed in
the artifact store, is refused. The pipeline holds the private key, the
servers only the public one:

    MLSYS_MODEL_SIGNING_KEY (or _FILE)   base64 of the 32-byte Ed25519 private key   workers (train, select)
    MLSYS_MODEL_VERIFY_KEY  (or _FILE)   base64 of the 32-byte public key             serve, batch, evaluate

Without them (the embedded setup) the keys live in ``$MLSYS_HOME/keys``, made at
the first signature. Make a pair with ``python -m mlsys.model.signature``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from mlsys.errors import MlsysError
from mlsys.settings import local_secret, secret, settings

SIGNING_KEY, VERIFY_KEY = "MLSYS_MODEL_SIGNING_KEY", "MLSYS_MODEL_VERIFY_KEY"
SIGNATURE_FILE = "signature.json"


class UnsignedModelError(MlsysError):
    """A model whose files the pipeline did not sign (or that changed since): it is not loaded."""


def _keys_dir() -> Path:
    return settings().home / "keys"


def _raw(name: str, value: str, size: int = 32) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ValueError(f"{name} is not base64 of {size} bytes; make a key pair with `python -m mlsys.model.signature`")
    return raw


def _private_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    value = secret(SIGNING_KEY)
    if value:
        return Ed25519PrivateKey.from_private_bytes(_raw(SIGNING_KEY, value))
    # the embedded setup: one key pair per $MLSYS_HOME, made once
    path = local_secret(_keys_dir() / "model-signing.key", lambda: _b64(Ed25519PrivateKey.generate().private_bytes_raw()))
    return Ed25519PrivateKey.from_private_bytes(_raw(str(path), path.read_text().strip()))


def _public_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    value = secret(VERIFY_KEY)
    if value:
        return Ed25519PublicKey.from_public_bytes(_raw(VERIFY_KEY, value))
    if secret(SIGNING_KEY) or (_keys_dir() / "model-signing.key").exists():
        return _private_key().public_key()
    raise UnsignedModelError(f"no key to check model signatures with: set {VERIFY_KEY} (or {VERIFY_KEY}_FILE) to the "
                             f"pipeline's public key, base64 of 32 bytes")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def digests(folder: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 of each named file in ``folder``."""
    out = {}
    for name in names:
        h = hashlib.sha256()
        with open(folder / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[name] = h.hexdigest()
    return out


def _message(files: dict[str, str]) -> bytes:
    return json.dumps({"mlsys-model": files}, sort_keys=True, separators=(",", ":")).encode()


def sign(folder: Path, names: list[str]) -> Path:
    """Write ``folder/signature.json``: the files' digests and the pipeline's signature over them."""
    files = digests(folder, names)
    key = _private_key()
    public = key.public_key().public_bytes_raw()
    doc = {"files": files, "key_id": hashlib.sha256(public).hexdigest()[:16], "signature": _b64(key.sign(_message(files)))}
    path = folder / SIGNATURE_FILE
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return path


def verify(folder: Path, names: list[str], what: str) -> None:
    """Raise UnsignedModelError unless ``folder`` holds the named files exactly as the pipeline signed them."""
    from cryptography.exceptions import InvalidSignature

    path = folder / SIGNATURE_FILE
    if not path.exists():
        raise UnsignedModelError(f"{what} has no {SIGNATURE_FILE}: it was not logged by the mlsys pipeline; "
                                 f"serve a model version that `mlsys train` or `mlsys select` logged")
    try:
        doc = json.loads(path.read_text())
        files, signature = doc["files"], base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsignedModelError(f"{what}: {SIGNATURE_FILE} is malformed ({type(exc).__name__})") from None
    if not isinstance(files, dict) or sorted(files) != sorted(names):
        raise UnsignedModelError(f"{what}: {SIGNATURE_FILE} covers {sorted(files) if isinstance(files, dict) else files}, "
                                 f"not the model's files {sorted(names)}")
    try:
        _public_key().verify(signature, _message(files))
    except InvalidSignature:
        raise UnsignedModelError(f"{what}: the signature does not match the pipeline's key ({VERIFY_KEY}); "
                                 f"the model was not logged by this pipeline") from None
    actual = digests(folder, names)
    changed = sorted(n for n in names if actual[n] != files[n])
    if changed:
        raise UnsignedModelError(f"{what}: {changed} changed after the pipeline signed them; re-run training")


def main() -> None:
    """Print a new key pair as the two environment variables (put them in .env, or in secret files)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    print(f"{SIGNING_KEY}={_b64(key.private_bytes_raw())}")
    print(f"{VERIFY_KEY}={_b64(key.public_key().public_bytes_raw())}")


if __name__ == "__main__":
    main()
