import json
import os

import pytest
import torch

from ltvl.pruning import Mask, load_mask, prune_to_sparsity, save_mask
from ltvl.util.errors import LtvlError


def _mask(seed=0, shapes=((5, 7), (3, 11), (13,))):
    g = torch.Generator().manual_seed(seed)
    return Mask({f"t{i}": torch.rand(s, generator=g) > 0.4 for i, s in enumerate(shapes)}, metadata={"k": seed})


def test_sparsity_global_and_per_tensor():
    m = Mask({"a": torch.tensor([True, False, False, True]), "b": torch.tensor([[False, False], [False, True]])})
    assert m.numel == 8 and m.n_pruned == 5
    assert m.sparsity == pytest.approx(5 / 8)
    assert m.per_tensor_sparsity() == {"a": 0.5, "b": 0.75}


def test_roundtrip_preserves_bits_hash_parent_metadata(tmp_path):
    m = _mask()
    m.parent = "ab" * 32
    p = tmp_path / "m.mask"
    assert save_mask(m, p) == m.sha256
    back = load_mask(p)
    assert back.equal(m) and back.sha256 == m.sha256
    assert back.parent == m.parent and back.metadata == {"k": 0} and back.fingerprint == m.fingerprint
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_hash_depends_on_bits_and_shapes():
    a, b = _mask(0), _mask(0)
    assert a.sha256 == b.sha256
    b.tensors["t0"][0, 0] = ~b.tensors["t0"][0, 0]
    assert a.sha256 != b.sha256
    c = Mask({"t0": a.tensors["t0"].reshape(7, 5), "t1": a.tensors["t1"], "t2": a.tensors["t2"]})
    assert c.sha256 != a.sha256 and c.fingerprint != a.fingerprint


def test_file_size_is_bitpacked(tmp_path):
    n = 1_000_003
    m = Mask({"w": torch.rand(n) > 0.5})
    save_mask(m, tmp_path / "m")
    assert os.path.getsize(tmp_path / "m") <= n / 8 + 64 * 1024


def test_truncated_file_is_rejected(tmp_path):
    p = tmp_path / "m"
    save_mask(_mask(), p)
    data = p.read_bytes()
    p.write_bytes(data[:-3])
    with pytest.raises(LtvlError, match="truncated or corrupt|bytes, expected"):
        load_mask(p)


def test_tampered_bits_fail_hash_check(tmp_path):
    p = tmp_path / "m"
    save_mask(_mask(), p)
    data = bytearray(p.read_bytes())
    data[-2] ^= 0x80  # flip a real mask bit (the last byte of t2 is partly padding)
    p.write_bytes(bytes(data))
    with pytest.raises(LtvlError, match="hash mismatch"):
        load_mask(p)


def test_an_edited_header_parent_fails_verification(tmp_path):
    """Before: the parent (and the free-form metadata) were outside every hash, so an edit passed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = tmp_path / "m"
    m = _mask()
    save_mask(m, p)
    with safe_open(str(p), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(tmp_path / "edited"), metadata={**meta, "parent": "f" * 64})
    with pytest.raises(LtvlError, match="mask header .* was edited"):
        load_mask(tmp_path / "edited")
    stripped = {k: v for k, v in meta.items() if k != "header_sha256"}  # a current file cannot drop its hash
    save_file(tensors, str(tmp_path / "stripped"), metadata=stripped)
    with pytest.raises(LtvlError, match="no header_sha256"):
        load_mask(tmp_path / "stripped")
    legacy = {**stripped, "format": "ltvl-mask/1"}  # written before the header hash existed: bits still checked
    save_file(tensors, str(tmp_path / "legacy"), metadata=legacy)
    loaded = load_mask(tmp_path / "legacy")
    assert loaded.sha256 == m.sha256 and not loaded.header_verified


def test_non_mask_file_is_rejected(tmp_path):
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(LtvlError, match="not an ltvl mask"):
        load_mask(tmp_path / "w.safetensors")
    with pytest.raises(LtvlError, match="does not exist"):
        load_mask(tmp_path / "missing")


def test_set_operations():
    a = Mask({"x": torch.tensor([1, 1, 0, 0], dtype=torch.bool)})
    b = Mask({"x": torch.tensor([1, 0, 1, 0], dtype=torch.bool)})
    assert a.iou(b) == pytest.approx(1 / 3)
    assert a.intersection(b).tensors["x"].tolist() == [True, False, False, False]
    assert a.union(b).tensors["x"].tolist() == [True, True, True, False]
    comp = a.complement()
    assert comp.tensors["x"].tolist() == [False, False, True, True] and comp.parent == a.sha256
    assert a.iou(a) == 1.0 and a.iou(comp) == 0.0


def test_incompatible_masks_name_the_first_mismatch():
    a = Mask({"x": torch.ones(4, dtype=torch.bool), "y": torch.ones(2, dtype=torch.bool)})
    b = Mask({"x": torch.ones(4, dtype=torch.bool), "y": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(LtvlError, match="shape mismatch for 'y'"):
        a.iou(b)
    c = Mask({"x": torch.ones(4, dtype=torch.bool), "z": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(LtvlError, match="'y' does not exist"):
        a.intersection(c)


def test_summary_is_json_serialisable(tiny_bert):
    from ltvl.pruning import select_prunable
    w = {n: p.detach() for n, p in select_prunable(tiny_bert).items()}
    m = prune_to_sparsity(w, None, 0.3)
    s = json.loads(json.dumps(m.summary()))
    assert s["sha256"] == m.sha256 and set(s["per_tensor"]) == set(w)


def test_atomic_writes_respect_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_mask(_mask(), tmp_path / "m")
        assert (os.stat(tmp_path / "m").st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
