import pytest

from ltvl.pruning import Schedule
from ltvl.pruning.schedule import rounds_needed
from ltvl.util.errors import LtvlError


def test_geometric_until_target():
    s = Schedule("geometric", 0.2, 0.9).sparsities()
    assert s == pytest.approx([1 - 0.8 ** k for k in range(1, len(s) + 1)])
    assert s[-1] >= 0.9 > s[-2]
    assert len(s) == rounds_needed(0.2, 0.9) == 11


def test_geometric_by_rounds_and_linear():
    assert Schedule("geometric", 0.1, None, 3).sparsities() == pytest.approx([0.1, 0.19, 0.271])
    assert Schedule("linear", 0.1, 0.9).sparsities() == pytest.approx([0.1 * k for k in range(1, 10)])
    assert Schedule("linear", 0.1, None, 4).n_rounds == 4


@pytest.mark.parametrize("kw,msg", [
    (dict(kind="cubic"), "unknown schedule kind"),
    (dict(rate=0.0), "outside \\(0, 1\\)"),
    (dict(rate=1.0), "outside \\(0, 1\\)"),
    (dict(target_sparsity=1.0), "target sparsity"),
    (dict(target_sparsity=0.5, rounds=3), "exactly one"),
    (dict(target_sparsity=None, rounds=0), "rounds must be"),
    (dict(kind="linear", rate=0.3, target_sparsity=0.95), "unreachable"),
    (dict(kind="linear", rate=0.3, target_sparsity=None, rounds=4), ">= 1"),
])
def test_bad_schedules(kw, msg):
    with pytest.raises(LtvlError, match=msg):
        Schedule(**kw).sparsities()
