"""The compact ticket file (#34 item 2): kept values + packed bitmask, an exact round trip, and a
file that fails by name when any byte of its weights, mask or header changes."""

import json
import struct

import pytest
import torch

from ltvl.pruning import prune_to_sparsity
from ltvl.tickets.sparse import canonical, load_sparse, save_sparse, sparse_bytes
from ltvl.util.errors import LtvlError
from ltvl.util.weights import state_sha256


def ticket(sparsity: float = 0.75):
    g = torch.Generator().manual_seed(0)
    state = {"enc.0.weight": torch.randn(16, 12, generator=g), "enc.0.bias": torch.randn(16, generator=g),
             "enc.1.weight": torch.randn(8, 16, generator=g).to(torch.bfloat16),
             "emb.weight": torch.randn(30, 12, generator=g)}
    prunable = {k: v for k, v in state.items() if k.startswith("enc") and k.endswith("weight")}
    mask = prune_to_sparsity(prunable, None, sparsity)
    for n, keep in mask.tensors.items():
        state[n] = state[n] * keep  # as training leaves it: -0.0 where a negative weight was pruned
    return state, mask


def test_a_ticket_round_trips_exactly_with_its_mask(tmp_path):
    state, mask = ticket()
    assert any(torch.signbit(state["enc.0.weight"][~mask.tensors["enc.0.weight"]]))  # -0.0 is there
    sha = save_sparse(state, mask, tmp_path / "t.safetensors")
    got, got_mask = load_sparse(tmp_path / "t.safetensors")
    assert got_mask.sha256 == mask.sha256 and set(got) == set(state)
    for n, t in state.items():
        assert got[n].dtype == t.dtype and torch.equal(got[n], t)  # equal as numbers
    assert state_sha256(got) == sha == state_sha256(canonical(state, mask))  # bitwise, pruned as +0.0
    assert not any(torch.signbit(got["enc.0.weight"][~mask.tensors["enc.0.weight"]]))


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_the_file_costs_kept_values_plus_one_bit_per_weight(sparsity):
    state, mask = ticket(sparsity)
    data = sparse_bytes(state, mask)
    header = 8 + struct.unpack("<Q", data[:8])[0]
    body = len(data) - header
    kept = sum(int(mask.tensors[n].sum()) * state[n].element_size() for n in mask.names)
    bits = sum((state[n].numel() + 7) // 8 for n in mask.names)
    rest = sum(t.numel() * t.element_size() for n, t in state.items() if n not in mask.tensors)
    assert body == kept + bits + rest


def test_a_state_whose_pruned_weights_are_not_zero_is_not_packed(tmp_path):
    state, mask = ticket()
    state["enc.0.weight"][~mask.tensors["enc.0.weight"]] = 0.5
    with pytest.raises(LtvlError, match="pruned weights of enc.0.weight are not zero"):
        save_sparse(state, mask, tmp_path / "t.safetensors")
    assert not (tmp_path / "t.safetensors").exists()


def _edit(path, fn):
    data = bytearray(path.read_bytes())
    fn(data)
    path.write_bytes(bytes(data))


def test_a_changed_value_bit_or_header_is_caught_by_name(tmp_path):
    state, mask = ticket()
    path = tmp_path / "t.safetensors"
    save_sparse(state, mask, path)
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    meta = json.loads(path.read_bytes()[8:8 + n])
    kept_at = 8 + n + meta["enc.0.weight::kept"]["data_offsets"][0]
    keep_at = 8 + n + meta["enc.0.weight::keep"]["data_offsets"][0]

    good = path.read_bytes()
    _edit(path, lambda d: d.__setitem__(kept_at + 1, d[kept_at + 1] ^ 0x40))  # one weight changed
    with pytest.raises(LtvlError, match="do not hash to the header's state_sha256"):
        load_sparse(path)
    path.write_bytes(good)
    _edit(path, lambda d: d.__setitem__(keep_at, d[keep_at] ^ 0x01))  # one mask bit flipped
    with pytest.raises(LtvlError, match="kept values but its mask keeps|the mask in the file is"):
        load_sparse(path)
    path.write_bytes(good)
    text = good[8:8 + n].decode()
    edited = text.replace(meta["__metadata__"]["mask_sha256"], "0" * 64)
    path.write_bytes(good[:8] + edited.encode() + good[8 + n:])
    with pytest.raises(LtvlError, match="header was edited"):
        load_sparse(path)
    path.write_bytes(b"not a ticket at all")
    with pytest.raises(LtvlError, match="truncated or corrupt"):
        load_sparse(path)
