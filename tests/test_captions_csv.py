"""captions.csv (``--tasks captions:DIR``) is read strictly: a quote left open is an error naming the
file and the line it opened on, never the rest of the file swallowed into one caption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures import image_bytes, make_image

from evalkit.cli import main as cli
from evalkit.data.captions import captions_source
from evalkit.data.sources import DataError


def _folder(root: Path, body: str) -> Path:
    root.mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (root / name).write_bytes(image_bytes(make_image(1, 0)))
    (root / "captions.csv").write_text("image,caption\n" + body)
    return root


def _captions(root: Path) -> dict[str, list[str]]:
    data = captions_source({"type": "captions", "path": str(root)}, None, "t")
    return {k: lab for u in data.units for k, _load, lab in u.samples()}


# the quote opens on line 3 of each file (the header is line 1)
OPEN_QUOTES = {
    # the file ends inside the quote: without strict reading, b's caption is the rest of the file
    "never-closed": 'a.png,a red square\nb.png,"a blue circle\nc.png,a green shape\nd.png,grey\n',
    # a later quote closes it, and the row runs on
    "closed-by-a-later-row": 'a.png,a red square\nb.png,"a blue circle\nc.png,"a green" shape\nd.png,grey\n',
    # a later quote closes it at the end of a field: valid CSV, but a caption spanning three lines
    "closed-at-a-field-end": 'a.png,a red square\nb.png,"a blue circle\nc.png,green\nd.png,"\n',
}


@pytest.mark.parametrize("case", list(OPEN_QUOTES))
def test_an_open_quote_names_the_file_and_its_line(tmp_path, case, capsys):
    root = _folder(tmp_path / "d", OPEN_QUOTES[case])
    ann = root / "captions.csv"
    with pytest.raises(DataError, match=rf"^{ann}:3: .*quote"):
        _captions(root)
    # the public command says the same and fails
    assert cli.main(["data", "check", "--tasks", f"captions:{root}", "--json"]) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "error" and f"{ann}:3:" in row["message"] and "quote" in row["message"], row


def test_quoted_captions_with_commas_still_read(tmp_path):
    root = _folder(tmp_path / "d", 'a.png,"a red square, small"\n\nb.png,"say ""hi"""\nb.png,plain\n')
    assert _captions(root) == {"a.png": ["a red square, small"], "b.png": ['say "hi"', "plain"]}
