"""Host synchronisations of a training forward and backward do not grow with the batch: every one stalls a GPU
until its queue drains, and a loop that synced once per clip or sample cost batch x clips of them."""
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import make_tiny_model, tone

# ops whose result a CPU must read before Python goes on (.item(), int(), bool(), a boolean index's nonzero)
_SYNCING = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
            torch.ops.aten.masked_select.default}


class _CountSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SYNCING:
            self.count += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _count_tolist(counter: list):
    original = torch.Tensor.tolist

    def counted(self):
        counter.append(1)
        return original(self)

    torch.Tensor.tolist = counted
    try:
        yield
    finally:
        torch.Tensor.tolist = original


def _syncs(model, processor, batch_size: int) -> int:
    clips = [tone(0.8 + 0.3 * i, 250 + 60 * i, seed=i) for i in range(batch_size)]
    batch = dict(processor(clips, ["Transcribe the speech."] * batch_size,
                           answers=[f"the dog number {i} barks" for i in range(batch_size)], tasks=["asr"] * batch_size))
    tasks = batch.pop("tasks")
    copies: list = []
    with _count_tolist(copies), _CountSyncs() as mode:
        out = model(**batch, tasks=tasks)
        out.loss.backward()
    return mode.count + len(copies)


def test_training_step_syncs_do_not_grow_with_the_batch():
    model, processor = make_tiny_model(**{"loss.lambda_ctc": 0.3, "loss.lambda_sac": 0.1,
                                          "audio_tokens.mode": "hybrid"})
    model.set_stage(2)
    model.train()
    small, large = _syncs(model, processor, 2), _syncs(model, processor, 6)
    assert small == large, (small, large)
    assert large < 40


def test_pack_rows_joins_each_owners_valid_entries_in_order():
    from usam.ragged import pack_rows

    torch.manual_seed(0)
    values = torch.randn(4, 5, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    owner = torch.tensor([1, 0, 1, 1])  # rows 0, 2 and 3 join into sample 1; sample 2 owns nothing
    packed, lengths = pack_rows(values, mask, owner, 3)
    want = [values[1, :4], torch.cat([values[0, :2], values[3, :1]]), values.new_zeros(0, 3)]
    assert lengths.tolist() == [4, 3, 0] and packed.shape == (3, 4, 3)
    for b, rows in enumerate(want):
        assert torch.equal(packed[b, : len(rows)], rows) and not packed[b, len(rows):].any()
    packed.sum().backward()  # differentiable: the valid entries get gradient 1, the others none
    assert torch.equal(values.grad[..., 0], mask.float())
