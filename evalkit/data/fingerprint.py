"""Dataset fingerprints that do not depend on the file format: what a sample *is* once decoded,
plus its label, hashed; the hashes of a dataset combined in an order-independent root.

Scheme ``evalkit-content-v1`` (docs/fingerprints.md):

* content digest: SHA-256 over a type tag and the decoded content, as the views read it:
  an image (PIL) its mode, size, palette (mode ``P``) and raw pixel bytes, after the mode
  normalisation every image source shares (a mode other than RGB, L, RGBA or P is converted to
  RGB, as :func:`evalkit.data.sources.open_image_path` does); a video clip
  (:class:`~evalkit.data.video.VideoClip`) the frames its sampler decoded, in order; a point
  cloud (:class:`~evalkit.data.pointclouds.PointCloud`) its ``xyz`` and ``rgb`` arrays; an array
  (NumPy, or anything with ``.numpy()``) its dtype, shape and bytes. Keys, file names, paths and
  container formats take no part: the same pixels stored as a JPEG file, a WebDataset member or a
  Hugging Face row give the same digest, and re-encoding the JPEG (other pixels) another.
* sample digest: SHA-256 over the label's canonical JSON (sorted keys, no spaces, UTF-8: a class
  index ``3``, a list of captions), a zero byte and the content digest.
* root: SHA-256 over the sample digests, sorted, concatenated (32 bytes each). The order of the
  samples does not matter; a duplicate counts twice.

A :class:`Fingerprint` accumulates a dataset's digests (in the data loader of a run, or
standalone, :func:`fingerprint_data`) and says what it covers (:meth:`Fingerprint.as_dict`):
``root`` is given only when every listed sample was hashed (no ``--limit``; a feature-cache
entry written without digests is read and hashed again, without the model, in the next full run); ``duplicates`` counts samples whose decoded content equals an
earlier one's, labels ignored; ``undecodable`` samples are listed but not in the root.

Torch-free (NumPy, Pillow, PyAV through :mod:`evalkit.data.video`): a data-layer module.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from evalkit.data.sources import SourceData
from evalkit.errors import EvalkitError

__all__ = ["SCHEME", "DIGEST_SIZE", "FingerprintError", "canonical_label", "content_digest", "labelled_digest",
           "sample_digest", "Fingerprint", "fingerprint_data", "loaded_content_digest", "decoded_by_views"]

SCHEME = "evalkit-content-v1"
DIGEST_SIZE = 32
# the modes every image source hands over as they are; others become RGB (open_image_path's rule)
_KEPT_MODES = ("RGB", "L", "RGBA", "P")


class FingerprintError(EvalkitError, TypeError):
    """Content or a label of a kind this scheme does not hash (a plugin source's own type), or a
    video clip read without a frame sampler."""


def canonical_label(label: Any) -> bytes:
    """A label's canonical JSON (sorted keys, no spaces, UTF-8; NumPy scalars and arrays as
    numbers and lists, tuples as lists)."""
    return json.dumps(label, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise FingerprintError(f"cannot fingerprint a label of type {type(value).__name__}")


def _feed_image(h: Any, img: Image.Image) -> None:
    if img.mode not in _KEPT_MODES:
        img = img.convert("RGB")
    h.update(f"image\0{img.mode}\0{img.width}x{img.height}\0".encode())
    if img.mode == "P":  # indices mean nothing without their palette (and its transparency)
        palette = img.getpalette() or []
        h.update(bytes(palette) + b"\0" + repr(img.info.get("transparency")).encode() + b"\0")
    h.update(img.tobytes())


def _feed_array(h: Any, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    h.update(f"array\0{arr.dtype.str}\0{'x'.join(map(str, arr.shape))}\0".encode())
    h.update(memoryview(arr).cast("B") if arr.size else b"")


def decoded_by_views(loaded: Any) -> bool:
    """Whether what a loader returned is decoded only when a view reads it (a video clip: the
    frames its sampler takes), so that it is hashed after the views, not before."""
    video = sys.modules.get("evalkit.data.video")  # not imported (PyAV): no clip can exist
    return video is not None and isinstance(loaded, video.VideoClip)


def _feed(h: Any, content: Any) -> None:
    from evalkit.data.pointclouds import PointCloud

    if isinstance(content, Image.Image):
        _feed_image(h, content)
    elif decoded_by_views(content):
        decoded = content.decoded  # frames decoded by sampler (what the frames view read)
        if not decoded:
            raise FingerprintError(f"video clip {content.path}: no frames decoded yet; call clip.frames(sampler)")
        for name in sorted(decoded):
            h.update(f"frames\0{len(decoded[name])}\0".encode())
            for frame in decoded[name]:
                _feed_image(h, frame)
    elif isinstance(content, PointCloud):
        h.update(b"points\0")
        _feed_array(h, content.xyz)
        if content.rgb is None:
            h.update(b"no-rgb\0")
        else:
            _feed_array(h, content.rgb)
    elif isinstance(content, np.ndarray):
        _feed_array(h, content)
    elif callable(getattr(content, "numpy", None)) and hasattr(content, "dtype"):  # a torch tensor
        value = content.detach() if callable(getattr(content, "detach", None)) else content
        value = value.cpu() if callable(getattr(value, "cpu", None)) else value
        _feed_array(h, value.numpy())
    elif isinstance(content, (list, tuple)):
        h.update(f"list\0{len(content)}\0".encode())
        for item in content:
            _feed(h, item)
    else:
        raise FingerprintError(f"cannot fingerprint content of type {type(content).__name__}")


def content_digest(content: Any) -> bytes:
    """The 32-byte digest of decoded content (module docstring), its label left out."""
    h = hashlib.sha256()
    _feed(h, content)
    return h.digest()


def labelled_digest(content: bytes, label: Any) -> bytes:
    """The sample digest of content whose :func:`content_digest` is ``content``, labelled ``label``."""
    return hashlib.sha256(canonical_label(label) + b"\0" + content).digest()


def sample_digest(content: Any, label: Any) -> bytes:
    """The 32-byte digest of one sample: its label's canonical JSON and its decoded content."""
    return labelled_digest(content_digest(content), label)


def loaded_content_digest(loaded: Any) -> bytes | None:
    """The content digest of what a source's loader returned, once the views have read it (a
    clip's frames are then decoded); None for content of a kind the scheme does not hash."""
    try:
        return content_digest(loaded)
    except FingerprintError:
        return None


class Fingerprint:
    """The digests of a dataset, accumulated sample by sample (see the module docstring).

    ``add`` a hashed sample; ``add_undecodable`` a listed sample that did not decode;
    ``add_unhashed`` decoded samples whose digests are not known (a cache entry written without
    them): the fingerprint is then incomplete; ``mark_incomplete`` when not every listed sample
    was read (``--limit``). ``sources``: where the digests came from (``run``, ``cache``)."""

    def __init__(self) -> None:
        self.digests: list[bytes] = []
        self._contents: set[bytes] = set()
        self.samples = 0
        self.undecodable = 0
        self.duplicates = 0
        self.unhashed = 0
        self.cut = False
        self.sources: set[str] = set()

    def add(self, digest: bytes, content: bytes) -> None:
        self.samples += 1
        self.digests.append(bytes(digest))
        if content in self._contents:
            self.duplicates += 1
        else:
            self._contents.add(bytes(content))

    def add_undecodable(self, n: int = 1) -> None:
        self.samples += n
        self.undecodable += n

    def add_unhashed(self, n: int) -> None:
        self.samples += n
        self.unhashed += n

    def mark_incomplete(self) -> None:
        self.cut = True

    @property
    def hashed(self) -> int:
        return len(self.digests)

    @property
    def complete(self) -> bool:
        return not self.cut and self.unhashed == 0

    def root(self) -> str | None:
        """SHA-256 (hex) over the sorted sample digests; None when not :attr:`complete`."""
        if not self.complete:
            return None
        return hashlib.sha256(b"".join(sorted(self.digests))).hexdigest()

    @property
    def origin(self) -> str:
        if self.sources == {"cache"}:
            return "cache"
        return "mixed" if len(self.sources) > 1 else "run"

    def as_dict(self) -> dict[str, Any]:
        """What a result records as ``data_fingerprint``."""
        return {"scheme": SCHEME, "root": self.root(), "samples": self.samples, "hashed": self.hashed,
                "undecodable": self.undecodable, "duplicates": self.duplicates, "complete": self.complete,
                "from": self.origin}

    def merge(self, *others: Fingerprint) -> Fingerprint:
        """One fingerprint over this and ``others`` together, as if one dataset (a task over
        several splits): every digest in one root, duplicates counted across them."""
        out = Fingerprint()
        for fp in (self, *others):
            for digest in fp.digests:
                out.digests.append(digest)
            for content in fp._contents:
                if content in out._contents:
                    out.duplicates += 1
                out._contents.add(content)
            out.duplicates += fp.duplicates
            out.samples += fp.samples
            out.undecodable += fp.undecodable
            out.unhashed += fp.unhashed
            out.cut = out.cut or fp.cut
            out.sources |= fp.sources
        return out


def _label_key(label: Any) -> str | None:
    """A label as a class-count key (a class index or a name); None for other targets (captions)."""
    if isinstance(label, (bool, np.bool_)):
        return None
    if isinstance(label, (int, np.integer, str)):
        return str(label)
    return None


def fingerprint_data(data: SourceData, *, sampler: Any = None, progress: bool = True, desc: str = "fingerprint",
                     limit: int | None = None) -> tuple[Fingerprint, dict[str, Any]]:
    """A dataset's fingerprint read standalone, without a model: each sample decoded as a run's
    loader decodes it (a clip: the frames of ``sampler``, the task's view's), then hashed.
    Samples are decoded in this thread, in order, as a run's loader calls them (a source's
    loaders need not be thread-safe), and hashed in a second thread, batch by batch, so that
    on two cores or more hashing keeps pace with decoding. Returns (the fingerprint, extra
    figures: ``class_counts`` of the listed samples by label, ``undecodable_samples``: the first
    100 (key, reason), ``captions`` for caption lists)."""
    from evalkit.progress import progress_bar

    fp = Fingerprint()
    fp.sources.add("run")
    counts: Counter[str] = Counter()
    captions = 0
    bad: list[tuple[str, str]] = []
    seen = 0
    batch: list[tuple[Any, Any]] = []
    held = 0
    pending: deque[Future[list[tuple[bytes, Any]]]] = deque()

    def collect(keep: int) -> None:
        while len(pending) > keep:
            for content, label in pending.popleft().result():
                fp.add(labelled_digest(content, label), content)

    with ThreadPoolExecutor(1, thread_name_prefix="evalkit-hash") as pool, \
            progress_bar(data.size if limit is None else limit, desc, "samples", enabled=progress) as bar:
        for unit in data.units:
            for key, load, label in unit.samples():
                if limit is not None and seen >= limit:
                    fp.mark_incomplete()
                    break
                seen += 1
                if (k := _label_key(label)) is not None:
                    counts[k] += 1
                elif isinstance(label, list):
                    captions += len(label)
                try:
                    loaded = load()
                    if decoded_by_views(loaded):
                        if sampler is None:
                            raise FingerprintError(f"clip {key}: a video task's fingerprint needs its frame sampler")
                        loaded.frames(sampler)
                except FingerprintError:
                    raise
                except Exception as e:  # as the run's loader: a sample that does not decode is counted
                    fp.add_undecodable()
                    if len(bad) < 100:
                        bad.append((key, f"{type(e).__name__}: {e}".splitlines()[0][:300]))
                else:
                    batch.append((loaded, label))
                    held += _size_of(loaded)
                    if len(batch) >= _BATCH or held >= _BATCH_BYTES:
                        pending.append(pool.submit(_hash_batch, batch))
                        batch, held = [], 0
                        collect(1)  # at most one batch hashing while the next is decoded
                bar.update(1)
            else:
                continue
            break
        if batch:
            pending.append(pool.submit(_hash_batch, batch))
        collect(0)
    extra: dict[str, Any] = {"class_counts": dict(sorted(counts.items(), key=lambda kv: _sort_key(kv[0]))),
                             "undecodable_samples": [list(b) for b in bad]}
    if captions:
        extra["captions"] = captions
    return fp, extra


_BATCH = 64  # samples handed to the hashing thread at a time
_BATCH_BYTES = 64 << 20  # or fewer, when their decoded content holds this much


def _hash_batch(batch: list[tuple[Any, Any]]) -> list[tuple[bytes, Any]]:
    return [(content_digest(loaded), label) for loaded, label in batch]


def _size_of(loaded: Any) -> int:
    """About how many bytes a decoded sample holds (what a batch waiting to be hashed keeps)."""
    if isinstance(loaded, Image.Image):
        return loaded.width * loaded.height * 4
    if isinstance(loaded, np.ndarray):
        return int(loaded.nbytes)
    frames = getattr(loaded, "decoded", None)
    if isinstance(frames, dict):
        return sum(_size_of(f) for fs in frames.values() for f in fs)
    xyz = getattr(loaded, "xyz", None)
    return int(xyz.nbytes) * 2 if isinstance(xyz, np.ndarray) else 1 << 20


def _sort_key(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)
