"""EpochBatches: seeded order per epoch, each rank its share, resume mid-epoch in order."""

import pytest

from omniquality_r.data import batches as batches_mod
from omniquality_r.data.batches import EpochBatches


def test_each_epoch_is_a_seeded_permutation_in_whole_batches():
    done = {"n": 0}
    stream = EpochBatches(list(range(10)), 4, seed=3, position=lambda: done["n"])
    assert len(stream) == 2  # the last 2 items are dropped (drop_last)
    epoch0 = list(stream)
    assert [len(b) for b in epoch0] == [4, 4] and len({i for b in epoch0 for i in b}) == 8
    done["n"] = 2  # the module trained on both batches: the next iteration is epoch 1
    epoch1 = list(stream)
    assert epoch1 != epoch0 and list(EpochBatches(list(range(10)), 4, 3, lambda: 2)) == epoch1
    assert len(EpochBatches(list(range(10)), 4, 3, lambda: 0, drop_last=False)) == 3
    assert len(EpochBatches(list(range(3)), 4, 3, lambda: 0)) == 1  # fewer items than a batch


def test_a_resumed_epoch_continues_where_it_stopped():
    whole = list(EpochBatches(list(range(12)), 3, seed=0, position=lambda: 4))  # epoch 1
    resumed = list(EpochBatches(list(range(12)), 3, seed=0, position=lambda: 6))
    assert resumed == whole[2:]
    stream = EpochBatches(list(range(12)), 3, seed=0, position=lambda: 6)
    stream.load_state_dict(stream.state_dict())
    with pytest.raises(RuntimeError, match="batch position 5"):
        stream.load_state_dict({"position": 5})


def test_ranks_split_each_global_batch(monkeypatch):
    items = list(range(8))
    whole = list(EpochBatches(items, 4, seed=1, position=lambda: 0))
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(batches_mod, "rank_and_world", lambda r=rank: (r, 2))
        shares.append(list(EpochBatches(items, 4, seed=1, position=lambda: 0)))
    for b, batch in enumerate(whole):
        assert sorted(shares[0][b] + shares[1][b]) == sorted(batch)
        assert len(shares[0][b]) == len(shares[1][b]) == 2
    monkeypatch.setattr(batches_mod, "rank_and_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        list(EpochBatches(items, 4, seed=1, position=lambda: 0))
