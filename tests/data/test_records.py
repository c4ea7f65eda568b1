import numpy as np
import pytest
from PIL import Image

from omniquality_r.data.records import DataError, Record, load_image, load_readable


def _record(path, rid):
    return Record(id=rid, image=str(path), task="technical", mos=2.5, mos_raw=2.5, dataset="t")


def test_load_readable_skips_missing_and_corrupt_images(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    records = [_record(good, "a"), _record(tmp_path / "gone.png", "b"), _record(corrupt, "c")]
    kept, images, skipped = load_readable(records)
    assert [r.id for r in kept] == ["a"] and images[0].size == (8, 8)
    assert skipped[0].startswith("b: image file not found") and "gone.png" in skipped[0]
    assert skipped[1].startswith("c: corrupt or unreadable image") and "corrupt.png" in skipped[1]
    with pytest.raises(DataError, match=r"corrupt\.png"):
        load_image(corrupt)
