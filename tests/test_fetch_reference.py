"""`make reference`: files land only when their SHA-256 matches the pin; a failure is a line, not a file."""

import hashlib
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fetch_reference", REPO / "scripts" / "fetch_reference.py")
fetch_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch_reference)


def test_checksummed_fetch_from_a_mirror(tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    good, bad = b"tin,tout\n8,8\n", b"tampered\n"
    for name, data in (("good.csv", good), ("bad.csv", bad)):
        f = mirror / "o/r/raw/c0ffee" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    monkeypatch.setattr(fetch_reference, "FILES", [
        ("grid/good.csv", ("o/r", "c0ffee"), "good.csv", hashlib.sha256(good).hexdigest()),
        ("grid/bad.csv", ("o/r", "c0ffee"), "bad.csv", hashlib.sha256(b"the real file").hexdigest()),
        ("grid/gone.csv", ("o/r", "c0ffee"), "gone.csv", "0" * 64),
    ])
    dest = tmp_path / "reference"
    assert fetch_reference.fetch(dest, mirror.as_uri()) == 2
    assert (dest / "wilkins2024/grid/good.csv").read_bytes() == good
    assert not (dest / "wilkins2024/grid/bad.csv").exists()  # a wrong checksum is never written
    assert not (dest / "wilkins2024/grid/gone.csv").exists()
    err = capsys.readouterr().err
    assert "sha256" in err and "gone.csv" in err
    # idempotent: a second run fetches nothing it already has
    assert fetch_reference.fetch(dest, mirror.as_uri()) == 2
    assert "ok" in capsys.readouterr().out
