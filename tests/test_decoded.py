"""Decoded uploads are remembered: a slider move does not decode or hash the photo again."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.explain import inputs
from app.explain.decoded import DecodedImages, image_digest, upload_key
from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry


def _photo(path, seed: int = 0, size=(96, 64)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


class CountingDecoder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source, max_side):
        self.calls += 1
        return inputs.load_image(source, max_side=max_side)


def test_same_path_is_decoded_once_and_a_rewritten_file_again(tmp_path):
    path = _photo(tmp_path / "bird.png")
    memo, decode = DecodedImages(), CountingDecoder()
    first = memo.load(str(path), 1024, decode)
    again = memo.load(path, 1024, decode)  # str or Path: the same upload
    assert decode.calls == 1 and again is first
    assert first.digest == image_digest(first.image)
    _photo(path, seed=1)
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    changed = memo.load(str(path), 1024, decode)
    assert decode.calls == 2 and changed.digest != first.digest


def test_bytes_are_keyed_by_content_and_the_side_cap(tmp_path):
    data = _photo(tmp_path / "bird.png").read_bytes()
    memo, decode = DecodedImages(), CountingDecoder()
    memo.load(data, 1024, decode)
    memo.load(bytes(data), 1024, decode)
    assert decode.calls == 1
    small = memo.load(data, 48, decode)
    assert decode.calls == 2 and max(small.image.size) == 48


def test_in_memory_images_are_not_remembered_and_bounds_hold(tmp_path):
    image = Image.open(_photo(tmp_path / "bird.png")).convert("RGB")
    assert upload_key(image, 1024) is None and upload_key(str(tmp_path / "missing"), 1) is None
    memo, decode = DecodedImages(max_entries=2), CountingDecoder()
    memo.load(image, 1024, decode)
    memo.load(image, 1024, decode)
    assert decode.calls == 2
    paths = [str(_photo(tmp_path / f"{i}.png", seed=i)) for i in range(3)]
    for path in paths:
        memo.load(path, 1024, decode)
    memo.load(paths[0], 1024, decode)  # evicted by the 2-entry bound: decoded again
    assert decode.calls == 2 + 4


def test_bad_files_still_get_their_message_every_time(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    memo = DecodedImages()
    for _ in range(2):
        with pytest.raises(inputs.InvalidInputError):
            memo.load(str(bad), 1024, CountingDecoder())


def test_service_slider_moves_decode_the_upload_once(tmp_path, monkeypatch):
    registry = ModelRegistry(Settings(device="cpu", offline=True, models=("demo-cnn",)))
    path = str(_photo(tmp_path / "bird.png", size=(128, 128)))
    calls = []
    real = inputs.load_image
    monkeypatch.setattr(inputs, "load_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    service = ExplanationService(registry.get)
    first = service.explain("demo-cnn", path, ExplainSettings(gamma=0.2))
    for gamma in (0.4, 0.8):
        moved = service.explain("demo-cnn", path, ExplainSettings(gamma=gamma))
    service.gamma_strip("demo-cnn", path, ExplainSettings())
    assert len(calls) == 1 and moved.cached
    assert np.array_equal(first.cam, moved.cam) and not np.array_equal(first.finer, moved.finer)
