"""Birdsnap: the test list of the Birdsnap 1.1 metadata, over whatever images could be downloaded.

Birdsnap ships metadata and URLs, not images; many URLs are dead, so every copy differs (the paper
had 2,195 test images, InternVL's list has 1,845, and neither list is published with the paper).
Layout: ``<root>/test_images.txt`` (one relative image path per line, ``<Species_Dir>/<file>.jpg``,
after a header line ``path``) and the images under ``<root>/download/images/`` (the official
``get_birdsnap.py`` output), ``<root>/images/`` or ``<root>/`` itself. ``test_list`` names another
list file (e.g. your own 2,195-image list); listed images that are not on disk are counted
(``info['listed_missing']``) and left out, as the paper did with its broken links.

Labels: the species folder name matched to the task's class names (OpenAI's 500 Birdsnap names
are the folder names with ``_`` as spaces; case and punctuation are ignored), so no label-order
file is needed. A folder that matches no class name is an error naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.data.sources import (
    DataError,
    SourceData,
    describe_layout,
    folder_listing,
    normalise_name,
    resolve_path,
    source_file,
    sources,
)
from evalkit.data.torchvision_roots import files_units

describe_layout("birdsnap", "Birdsnap 1.1 folder: test_images.txt + images under download/images/ (get_birdsnap.py), "
                            "images/ or the folder itself")


@sources.register("birdsnap")
def birdsnap_source(source: dict[str, Any], data_root: str | Path | None, task: str) -> SourceData:
    root = resolve_path(source, data_root, task)
    if not root.is_dir():
        raise DataError(f"{root}: Birdsnap folder not found")
    listing = source_file(source, "test_list") or root / "test_images.txt"
    if not listing.is_file():
        raise DataError(f"{root}: not a Birdsnap folder: expected {listing.name} (the test image list); "
                        f"found {folder_listing(root)}")
    rel = [ln.strip().split("\t")[0] for ln in listing.read_text().splitlines() if ln.strip()]
    if rel and rel[0].lower() == "path":
        rel = rel[1:]
    names = source.get("_classnames")
    if not names:
        raise DataError(f"task {task!r}: the Birdsnap source labels images by the task's class names; the task has none")
    index = {normalise_name(n): i for i, n in enumerate(names)}
    bases = [root / "download" / "images", root / "images", root]
    base = next((b for b in bases if b.is_dir() and any((b / r).is_file() for r in rel)), None)
    if base is None:
        raise DataError(f"{root}: none of the {len(rel)} images in {listing.name} is on disk (looked under "
                        f"{', '.join(str(b) for b in bases)})")
    items, missing, unknown = [], 0, set()
    for r in rel:
        species = r.split("/", 1)[0]
        label = index.get(normalise_name(species))
        if label is None:
            unknown.add(species)
            continue
        path = base / r
        if path.is_file():
            items.append((path, label))
        else:
            missing += 1
    if unknown:
        raise DataError(f"{listing}: {len(unknown)} species folder(s) match none of the task's {len(names)} class "
                        f"names (e.g. {', '.join(sorted(unknown)[:3])})")
    info = {"path": str(root), "layout": "birdsnap", "test_list": str(listing), "listed": len(rel),
            "listed_missing": missing}
    return SourceData(files_units("birdsnap", base, items), None, None, info)
