"""The conventions shared by every tv_plugins entry point: one registry (unknown name -> ValueError, unknown
option -> TypeError), explicit randomness (the caller's global RNG is never changed, nor does it change a result),
one ``progress`` flag."""

import pytest
import torch
from torch import nn

from tv_plugins import DDiFParameterization, TrajectoryMatching, distill, evaluate_synthetic, select_coreset
from tv_plugins import train_expert_trajectories as train_experts
from tv_plugins.condensation import OBJECTIVES, PARAMETERIZATIONS
from tv_plugins.coreset import METHODS
from tv_plugins.registry import Registry, check_choice, check_int, check_number

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"depth": 1, "width": 4, "batch_real": 4}


def test_one_registry_class_for_methods_parameterizations_and_objectives():
    assert type(METHODS) is type(PARAMETERIZATIONS) is type(OBJECTIVES) is Registry
    assert set(PARAMETERIZATIONS) == {"pixel", "fred", "ddif"} and set(OBJECTIVES) == {"dm", "dc", "tm"}
    assert PARAMETERIZATIONS["ddif"].target is DDiFParameterization and DDiFParameterization.kind == "ddif"
    assert OBJECTIVES["tm"].target is TrajectoryMatching and TrajectoryMatching.name == "tm"
    with pytest.raises(ValueError, match="already registered"):
        METHODS.register("lcmat")(lambda group, k, generator: None)


@pytest.mark.parametrize("call,match", [
    (lambda points, data: select_coreset(points(), "lcmat-s", 0.3, progress=False), r"method must be one of \['craig'"),
    (lambda points, data: distill(data, "wavelet", "dm", ipc=1, iterations=0, progress=False),
     r"parameterization must be one of \['ddif', 'fred', 'pixel'\]"),
    (lambda points, data: distill(data, "pixel", "kd", ipc=1, iterations=0, progress=False),
     r"objective must be one of \['dc', 'dm', 'tm'\]"),
    (lambda points, data: select_coreset(points(), "lcmat", 0.3, warmup_epochs=0, progress=False, eps_mode="ratio"), "eps_mode"),
    (lambda points, data: select_coreset(points(), "gradmatch", 0.3, warmup_epochs=0, progress=False, lam=0), "lam"),
])
def test_unknown_names_and_bad_values_are_value_errors(call, match, points, tiny_images):
    with pytest.raises(ValueError, match=match):
        call(points, tiny_images)


@pytest.mark.parametrize("call,accepted", [
    (lambda points, data: select_coreset(points(), "uncertainty", 0.3, progress=False, scores="margin"), "['score']"),
    (lambda points, data: distill(data, "fred", "dm", ipc=1, iterations=0, progress=False,
                     parameterization_kwargs={"K": 4}), "'convention', 'k', 'mask_source'"),
    (lambda points, data: distill(data, "pixel", "dm", ipc=1, iterations=0, progress=False,
                     objective_kwargs={"steps_per_class": True}), "'batch_syn', 'depth'"),
    (lambda points, data: TrajectoryMatching(expert_kwargs={"experts": 3}), "'batch_size', 'depth'"),
])
def test_unknown_options_are_type_errors_listing_the_accepted_ones(call, accepted, points, tiny_images):
    with pytest.raises(TypeError, match="accepted options") as err:
        call(points, tiny_images)
    assert accepted in str(err.value)


def test_value_checks_name_the_argument_and_never_coerce():
    assert check_int("n", 3) == 3 and check_int("n", None, optional=True) is None
    assert check_number("lr", 1) == 1.0 and check_choice("mode", "a", ("a", "b")) == "a"
    for call, match in ((lambda: check_int("n", True), "n must be an int >= 1"), (lambda: check_int("n", 0), "n"),
                        (lambda: check_number("lr", float("nan")), "lr must be a finite number"),
                        (lambda: check_number("lr", 0.0, positive=True), "lr must be a finite number > 0"),
                        (lambda: check_choice("mode", "c", ("a", "b")), r"mode must be one of \('a', 'b'\)")):
        with pytest.raises(ValueError, match=match):
            call()


def _rng_untouched(call):
    """Run ``call`` twice from two different global RNG states: the state is unchanged by it each time, and the
    results are identical (nothing the library does draws from the caller's RNG)."""
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        before = torch.get_rng_state()
        results.append(call())
        assert torch.equal(torch.get_rng_state(), before)  # a byte tensor: exact by construction
    return results


def test_select_coreset_leaves_the_global_rng_alone(points):
    def run():  # default model (built under the seed), 2-epoch warm-up, forgetting ties broken by the seed
        return select_coreset(points(), "forgetting", 0.3, warmup_epochs=2, batch_size=8, seed=3, progress=False)

    a, b = _rng_untouched(run)
    assert a == b  # same indices and weights bit for bit: same process, same computation
    uniform = _rng_untouched(lambda: select_coreset(points(), "uniform", 0.3, seed=3, progress=False))
    assert uniform[0] == uniform[1]


def test_condensation_entry_points_leave_the_global_rng_alone(tiny_images):
    a, b = _rng_untouched(lambda: distill(tiny_images, "pixel", "dc", ipc=1, iterations=2, progress=False,
                                          objective_kwargs={**SMALL, "outer_loop": 2, "inner_loop": 1}))
    assert torch.equal(a.to_tensors()[0], b.to_tensors()[0])  # same process, same kernels: bitwise
    runs = _rng_untouched(lambda: evaluate_synthetic(a, tiny_images, model=lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(64, 8), nn.Dropout(0.5), nn.Linear(8, 4)), runs=2, epochs=2, progress=False))
    assert runs[0] == runs[1]  # dropout draws come from the seeded, restored RNG
    experts = _rng_untouched(lambda: train_experts(tiny_images, num_experts=2, epochs=1, depth=1,
                                                               width=4, progress=False).trajectories)
    assert torch.equal(experts[0], experts[1])
    fields = _rng_untouched(lambda: DDiFParameterization.from_real(tiny_images, ipc=1, width=2, num_layers=1,
                                                                   init_steps=2).decode()[0].detach())
    assert torch.equal(fields[0], fields[1])


def test_expert_e_depends_only_on_its_own_seed(tiny_images):
    """Experts can be trained in any order or split across processes: expert 1 of a two-expert buffer equals the
    only expert of a buffer seeded with seed + 1000003."""
    kw = {"epochs": 2, "depth": 1, "width": 4, "progress": False}
    two = train_experts(tiny_images, num_experts=2, seed=5, **kw).trajectories
    one = train_experts(tiny_images, num_experts=1, seed=5 + 1_000_003, **kw).trajectories
    assert torch.equal(two[1], one[0])  # the same computation in the same process: bitwise


def test_progress_flag_silences_every_bar(capsys, points, tiny_images):
    select_coreset(points(), "lcmat", 0.3, warmup_epochs=1, batch_size=8, progress=False)
    synthetic = distill(tiny_images, "ddif", "dm", ipc=1, iterations=1, objective_kwargs=SMALL, progress=False,
                        parameterization_kwargs={"width": 2, "num_layers": 1, "init_steps": 2})
    evaluate_synthetic(synthetic, tiny_images, model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 4)),
                       runs=1, epochs=1, progress=False)
    assert capsys.readouterr().err == ""
    distill(tiny_images, "pixel", "dm", ipc=1, iterations=1, objective_kwargs=SMALL, progress=True)
    assert "distill pixel/dm" in capsys.readouterr().err


def test_an_objective_written_for_the_earlier_step_signature_still_runs_reproducibly(tiny_images):
    from tv_plugins.condensation import DistributionMatching

    class Legacy(DistributionMatching):
        def step(self, parameterization, optimizer, real):  # no generator: draws from the (seeded) global RNG
            return super().step(parameterization, optimizer, real, None)

    a, b = _rng_untouched(lambda: distill(tiny_images, "pixel", Legacy(**SMALL), ipc=1, iterations=2, seed=4,
                                          progress=False).to_tensors()[0])
    assert torch.equal(a, b)  # same seed: same set, whatever the caller's RNG state (one process: bitwise)
