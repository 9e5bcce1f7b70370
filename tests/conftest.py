"""Fixtures shared by the tests: one thread, the tokenizer, a tiny model with sharp weights, and the metrics rows
and results of the committed run named by a lesson test module's RUN."""
import pytest
import torch

from minigrpo.config import make_config
from minigrpo.model import build_model
from minigrpo.tokenizer import build_tokenizer

from nbcells import committed_run


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and with another process
    busy on a 2-core machine, two OpenMP threads make these tests 10-40x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def rich(tok):
    """The tiny model with its matrices redrawn at std 0.3 (seeded).

    At the default init (std 0.02) the next-token distribution is nearly
    uniform and greedy decoding repeats one token forever, which would hide a
    wrong position or a stale cache; at std 0.3 greedy continuations vary with
    the prefix, so the sampler tests have something to catch.
    """
    m = build_model(make_config("tiny", seed=0), tok).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return m


@pytest.fixture(scope="module")
def committed(request):
    """(metrics rows, results) of the committed run folder in the test module's RUN."""
    return committed_run(request.module.RUN)


@pytest.fixture(scope="module")
def rows(committed):
    return committed[0]


@pytest.fixture(scope="module")
def results(committed):
    return committed[1]
