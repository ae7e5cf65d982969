"""The prior images kept on disk: a cached array is the computed one byte for byte; a corrupt or
unwritable cache is skipped (the array is computed instead); ``off`` and large arrays keep nothing."""
import numpy as np

from archscan.analysis import prior


def _fresh(monkeypatch, tmp_path, value):
    monkeypatch.setenv("ARCHSCAN_CACHE_DIR", value if value == "off" else str(tmp_path / value))
    prior.prior_images.cache_clear()


def test_the_cached_prior_is_the_computed_one(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path, "cache")
    first = prior.prior_images((3, 8, 8), 6, 1)
    assert first.tobytes() == prior.computed_prior((3, 8, 8), 6, 1).tobytes()
    path = prior.cache_path((3, 8, 8), 6, 1)
    assert path.exists() and path.parent == tmp_path / "cache"
    prior.prior_images.cache_clear()
    monkeypatch.setattr(prior, "computed_prior", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = prior.prior_images((3, 8, 8), 6, 1)
    assert again.tobytes() == first.tobytes()


def test_the_key_separates_shape_count_and_seed(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path, "cache")
    paths = {prior.cache_path(s, n, seed) for s, n, seed in [((3, 8, 8), 6, 1), ((3, 8, 9), 6, 1),
                                                               ((3, 8, 8), 7, 1), ((3, 8, 8), 6, 2)]}
    assert len(paths) == 4


def test_a_corrupt_cache_file_is_recomputed(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path, "cache")
    expected = prior.computed_prior((1, 6, 6), 4, 0)
    path = prior.cache_path((1, 6, 6), 4, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an array")
    assert np.array_equal(prior.prior_images((1, 6, 6), 4, 0), expected)
    assert np.array_equal(np.load(path), expected)    # and rewritten


def test_an_unwritable_cache_is_skipped(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("ARCHSCAN_CACHE_DIR", str(blocker / "cache"))
    prior.prior_images.cache_clear()
    assert np.array_equal(prior.prior_images((1, 6, 6), 4, 0), prior.computed_prior((1, 6, 6), 4, 0))


def test_off_and_large_arrays_keep_nothing(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path, "off")
    assert prior.cache_path((3, 8, 8), 6, 1) is None
    _fresh(monkeypatch, tmp_path, "cache")
    assert prior.cache_path((3, 224, 224), 24, 0) is None   # 29 MB: over CACHE_MAX_BYTES
