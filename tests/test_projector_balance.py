"""projector.balance_scope ranks: the balance loss counts expert use over every data-parallel rank's micro-batch."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from usam.config import ProjectorSettings
from usam.projector import TaskAwareMoEProjector


def _projector(scope):
    torch.manual_seed(0)
    return TaskAwareMoEProjector(ProjectorSettings(num_experts=3, use_instruction=False, balance_scope=scope), 8, 8)


def _tokens(rank):
    torch.manual_seed(10 + rank)
    return torch.randn(2, 5, 8) * (1 + 3 * rank), torch.ones(2, 5, dtype=torch.bool)


def _parts(projector, tokens, mask):
    """(tokens per expert (E,), tokens, mean router probability (E,)) of one micro-batch, by hand."""
    probs = projector.router(tokens).float().softmax(-1)[mask]
    return torch.bincount(probs.argmax(-1), minlength=3).float(), mask.sum(), probs.mean(0)


def _rank(rank, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    results = {}
    for scope in ("ranks", "micro_batch"):
        projector = _projector(scope).train()
        tokens, mask = _tokens(rank)
        results[scope] = float(projector(tokens, mask, None).balance_loss)
        results[scope + "_eval"] = float(projector.eval()(tokens, mask, None).balance_loss)
    torch.save(results, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_balance_over_ranks_uses_the_global_expert_fractions(tmp_path):
    mp.spawn(_rank, args=(f"file://{tmp_path}/store", str(tmp_path)), nprocs=2, join=True)
    projector = _projector("ranks")
    parts = [_parts(projector, *_tokens(rank)) for rank in range(2)]
    f_global = (parts[0][0] + parts[1][0]) / (parts[0][1] + parts[1][1])
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        counts, n, p = parts[rank]
        assert abs(got["ranks"] - float(3 * (f_global * p).sum())) < 1e-5
        local = float(3 * (counts / n * p).sum())
        assert abs(got["micro_batch"] - local) < 1e-5 and abs(got["ranks_eval"] - local) < 1e-5
        assert abs(got["ranks"] - local) > 1e-4  # the ranks route differently: the scopes give different losses
