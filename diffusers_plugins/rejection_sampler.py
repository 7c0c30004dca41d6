"""The DiffRS rejection sampler (Na et al., ICML 2024, arXiv 2405.17880) over asynchronous slots.

Levels run ``0..N`` (0 = start noise, ``N`` = finished); ``log L_i(x)`` is the raw discriminator logit
at level ``i``. A model step landing on level ``i`` faces the *transition* test ``Delta_i = log L_i(x_i)
- log L_{i-1}(parent)`` against ``log M'_i``; a rejected sample is re-noised ``backsteps`` levels back
with the forward kernel and faces *marginal* tests ``log L_j(x)`` against ``log M_j`` until accepted or
at level 0, where the next tick's start test accepts it or redraws it. A test accepts iff
``log(u + 1e-7) <= statistic - log M``, ``u ~ U[0, 1)`` (ties accept, as in the official code).

Each sample draws from its own streams (sampler noise, acceptance uniforms, back-step and fresh noise,
seeded by ``(base_seed, sample_id, stream)``), so its decisions do not depend on the batch it shares.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusers_plugins.level_tables import LevelTables

ACCEPT_EPS = 1e-7
STREAMS = {"sampler": 0, "accept": 1, "renoise": 2, "fresh": 3}

LogRatioFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``log_ratio_fn(x_ve [n,C,H,W], sigma [n], sample_ids [n]) -> log L [n]`` (float)."""
SampleModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``model_fn(model_input [n,C,H,W], timestep [n], sample_ids [n]) -> model_output``."""


def acceptance_test(statistic: torch.Tensor, log_m: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Bool ``[n]``: accept iff ``log(u + 1e-7) <= statistic - log_m`` (probability ~ min(1, e^(s - log M)))."""
    return torch.log(uniform.to(torch.float32) + ACCEPT_EPS) <= (statistic - log_m).to(torch.float32)


def thresholds_from_statistics(
    values: torch.Tensor, percentile: float, clamp_log_m: bool = True
) -> torch.Tensor:
    """Per-level log M ``[N+1]`` from warm-up statistics ``values [n, N+1]``.

    ``log M_k = max(0, Q_gamma(values[:, k]))`` with linear-interpolation quantiles
    (``torch.quantile``); without ``clamp_log_m`` the max(0, .) is dropped.
    """
    if not 0.0 <= percentile <= 1.0:
        raise ValueError(f"rejection_percentile must lie in [0, 1], got {percentile!r}")
    q = torch.quantile(values.to(torch.float64), percentile, dim=0)
    return q.clamp_min(0.0) if clamp_log_m else q


def _check_finite(values: torch.Tensor, level: torch.Tensor, what: str) -> None:
    """Raise ``ValueError`` naming the levels of the rows of ``values`` that hold NaN or inf."""
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        levels = sorted(set(level[bad].tolist()))
        raise ValueError(
            f"{what} non-finite values for {int(bad.sum())} of {len(bad)} samples at level(s) {levels} "
            "(0 = start noise); check the model weights, inputs and dtype (fp16 overflows above 65504)"
        )


class SampleStreams:
    """Per-sample random streams ``sampler``, ``accept``, ``renoise``, ``fresh``: each (sample, stream)
    pair has a ``torch.Generator`` seeded by a SeedSequence hash of ``(base_seeds[i], i, stream)``."""

    def __init__(self, base_seeds: list[int], device: torch.device | str = "cpu"):
        self.base_seeds = [int(s) for s in base_seeds]
        self.device = torch.device(device)
        self._gens: dict[tuple[int, int], torch.Generator] = {}

    def _gen(self, sample_id: int, stream: str) -> torch.Generator:
        key = (sample_id, STREAMS[stream])
        gen = self._gens.get(key)
        if gen is None:
            seed = np.random.SeedSequence([self.base_seeds[sample_id] % 2**63, sample_id, key[1]])
            gen = torch.Generator(self.device).manual_seed(int(seed.generate_state(1, np.uint64)[0] % 2**63))
            self._gens[key] = gen
        return gen

    def randn(self, stream: str, sample_ids: torch.Tensor, shape: tuple[int, ...], dtype=torch.float32):
        """Standard normal ``[n, *shape]``, row ``j`` from sample ``sample_ids[j]``'s stream."""
        draw = [
            torch.randn(shape, generator=self._gen(int(s), stream), device=self.device, dtype=dtype)
            for s in sample_ids
        ]
        return torch.stack(draw) if draw else torch.empty((0, *shape), device=self.device, dtype=dtype)

    def rand(self, stream: str, sample_ids: torch.Tensor) -> torch.Tensor:
        """Uniform ``[n]`` in [0, 1), entry ``j`` from sample ``sample_ids[j]``'s stream."""
        draw = [torch.rand(1, generator=self._gen(int(s), stream), device=self.device) for s in sample_ids]
        return torch.cat(draw) if draw else torch.empty((0,), device=self.device)


@dataclass
class Slots:
    """The samples in flight, one row per slot in every field (``row``: the caller's row). Selecting
    and appending treat all fields alike, so per-slot state added here (e.g. a multistep solver's
    history) follows the slots through refills and harvests."""

    x: torch.Tensor  # [S, C, H, W] states in scheduler coordinates
    level: torch.Tensor  # [S] long, 0..N; a slot at level 0 has not passed the start test yet
    parent_log_ratio: torch.Tensor  # [S] float32: log L of the last accepted state of the trajectory
    trajectory_nfe: torch.Tensor  # [S] long, CPU: model calls of the current trajectory
    row: torch.Tensor  # [S] long, CPU

    @classmethod
    def start(cls, x: torch.Tensor, row: torch.Tensor) -> Slots:
        """Fresh level-0 slots holding states ``x [S, C, H, W]`` for the caller's rows ``row [S]``."""
        n, dev = x.shape[0], x.device
        return cls(x, torch.zeros(n, dtype=torch.long, device=dev), torch.zeros(n, device=dev), 0 * row, row)

    def __len__(self) -> int:
        return self.row.numel()

    def select(self, keep: torch.Tensor) -> Slots:
        """The slots where the bool mask ``keep [S]`` is true."""
        return Slots(**{f.name: (t := getattr(self, f.name))[keep.to(t.device)] for f in fields(self)})

    def extend(self, other: Slots) -> Slots:
        """These slots followed by ``other``'s."""
        return Slots(
            **{f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)}
        )

    def restart(self, rows: torch.Tensor, x: torch.Tensor) -> None:
        """Begin a new trajectory in slots ``rows`` (device indices) from fresh level-0 states ``x``."""
        self.x[rows] = x.to(self.x.dtype)
        self.level[rows] = 0
        self.parent_log_ratio[rows] = 0.0
        self.trajectory_nfe[rows.cpu()] = 0


@dataclass
class SamplingResult:
    """What :meth:`RejectionSampler.run` returns (``n`` samples, ``N`` levels)."""

    samples: torch.Tensor  # [n, C, H, W] final states, ordered like the input latents
    nfe: torch.Tensor  # [n] long: all model calls spent on each sample, discarded restarts included
    trajectory_nfe: torch.Tensor  # [n] long: model calls of the emitted trajectory
    discriminator_evals: torch.Tensor  # [n] long
    rejections: torch.Tensor  # [n] long: failed tests (each one back-steps or redraws the start)
    restarts: torch.Tensor  # [n] long: trajectories abandoned by the NFE budget
    tests_per_level: torch.Tensor  # [N+1] long
    accepts_per_level: torch.Tensor  # [N+1] long
    ticks: int = 0
    marginal: torch.Tensor | None = None  # [n, N+1] float32: log L at each level (warm-up runs only)
    transition: torch.Tensor | None = None  # [n, N+1] float32: Delta at each level (warm-up runs only)
    PER_SAMPLE = ("nfe", "trajectory_nfe", "discriminator_evals", "rejections", "restarts")

    @classmethod
    def empty(cls, latents: torch.Tensor, num_levels: int, device, warmup: bool) -> SamplingResult:
        n, per_level = latents.shape[0], ("tests_per_level", "accepts_per_level")
        return cls(
            samples=torch.empty_like(latents, device=device),
            **{name: torch.zeros(n, dtype=torch.long) for name in cls.PER_SAMPLE},
            **{name: torch.zeros(num_levels + 1, dtype=torch.long) for name in per_level},
            **{name: torch.zeros(n, num_levels + 1) for name in ("marginal", "transition") if warmup},
        )

    def record_tests(self, rows: torch.Tensor, level: torch.Tensor, accepted: torch.Tensor) -> None:
        """Count one discriminator call per caller row ``rows [m]`` and the tests by level."""
        ones = torch.ones(len(rows), dtype=torch.long)
        self.discriminator_evals.index_add_(0, rows, ones)
        self.rejections.index_add_(0, rows[~accepted], ones[~accepted])
        self.tests_per_level.index_add_(0, level, ones)
        self.accepts_per_level.index_add_(0, level[accepted], ones[accepted])


@dataclass
class _Run:
    """Book-keeping of one :meth:`RejectionSampler.run` call: queue, results, tick count."""

    latents: torch.Tensor
    sample_ids: torch.Tensor  # [n] long, CPU
    result: SamplingResult
    max_ticks: int
    num_slots: int
    bar: tqdm
    warmup: bool  # accept every test and record the statistics
    pending: collections.deque = field(default_factory=collections.deque)
    finished: int = 0

    def ids(self, slots: Slots, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Sample ids of ``slots`` (or of its ``rows``)."""
        return self.sample_ids[slots.row if rows is None else slots.row[rows.cpu()]]

    def tick(self) -> None:
        self.result.ticks += 1
        if self.result.ticks > self.max_ticks:
            raise RuntimeError(
                f"DiffRS stopped after max_ticks={self.max_ticks} ticks with {self.finished} of "
                f"{len(self.sample_ids)} samples finished ({int(self.result.rejections.sum())} rejections, "
                f"{int(self.result.restarts.sum())} restarts so far). The discriminator rejects almost "
                "everything at these thresholds: lower rejection_percentile, use clamp_log_m=False, set "
                "max_nfe_per_sample, or raise max_ticks."
            )

    def refill(self, slots: Slots) -> Slots:
        """Fill free slots with the next pending samples (their caller-given start latents)."""
        new = [self.pending.popleft() for _ in range(min(len(self.pending), self.num_slots - len(slots)))]
        new = torch.tensor(new, dtype=torch.long)
        return slots.extend(Slots.start(self.latents[new].to(slots.x.device), new)) if len(new) else slots

    def harvest(self, slots: Slots, num_levels: int) -> Slots:
        """Move finished slots (level ``N``) to the result and refill them."""
        done = slots.level == num_levels
        if bool(done.any()):
            rows = slots.row[done.cpu()]
            self.result.samples[rows] = slots.x[done]
            self.result.trajectory_nfe[rows] = slots.trajectory_nfe[done.cpu()]
            self.finished += len(rows)
            self.bar.update(len(rows))
            slots = self.refill(slots.select(~done))
        return slots


class RejectionSampler:
    """DiffRS over ``num_slots`` slots, each at its own level, one batched model call per stage.

    Args:
        tables: per-level tables and step kernels of the base scheduler.
        model_fn: see :data:`SampleModelFn`.
        log_ratio_fn: see :data:`LogRatioFn`; ``None`` runs the plain base sampler (no tests).
        log_m, log_m_transition: ``[N+1]`` thresholds for marginal and transition tests.
        backsteps: levels to re-noise on a rejection (``k >= 1``).
        max_nfe_per_sample: per-trajectory model-call cap; a slot whose calls so far plus the
            minimum still needed exceed it restarts from fresh noise. ``None``: no cap.
        max_ticks: hard limit on ticks (a tick = one batched macro-step or start-test round); when
            exceeded, ``run`` raises ``RuntimeError``. ``None``: ``50 * N * ceil(n / num_slots) + 50``.
        num_slots: concurrent samples per batched model call.
        streams: per-sample random streams.
        progress_bar: ``progress_bar(total=n)`` returns a tqdm-like bar (e.g. the pipeline's own).
    """

    def __init__(
        self,
        tables: LevelTables,
        model_fn: SampleModelFn,
        log_ratio_fn: LogRatioFn | None,
        streams: SampleStreams,
        log_m: torch.Tensor | None = None,
        log_m_transition: torch.Tensor | None = None,
        backsteps: int = 1,
        max_nfe_per_sample: int | None = None,
        max_ticks: int | None = None,
        num_slots: int = 64,
        progress_bar: Callable | None = None,
    ):
        N = tables.num_levels
        if not isinstance(backsteps, int) or isinstance(backsteps, bool) or not 1 <= backsteps <= N:
            raise ValueError(f"backsteps must be an int in [1, {N}], got {backsteps!r}")
        if max_nfe_per_sample is not None and (
            not isinstance(max_nfe_per_sample, int) or max_nfe_per_sample < tables.base_nfe
        ):
            raise ValueError(
                f"max_nfe_per_sample must be None or an int >= the base sampler's {tables.base_nfe} model "
                f"calls per sample, got {max_nfe_per_sample!r}"
            )
        if not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be a positive int, got {num_slots!r}")
        if max_ticks is not None and (not isinstance(max_ticks, int) or max_ticks < 1):
            raise ValueError(f"max_ticks must be None or a positive int, got {max_ticks!r}")
        for name, value in (("log_m", log_m), ("log_m_transition", log_m_transition)):
            if value is not None and (
                tuple(value.shape) != (N + 1,) or not bool(torch.isfinite(value).all())
            ):
                raise ValueError(f"{name} must be a finite tensor of shape [{N + 1}]")
        self.tables = tables
        self.model_fn = model_fn
        self.log_ratio_fn = log_ratio_fn
        self.streams = streams
        dev = tables.device
        self.log_m = None if log_m is None else log_m.to(dev, torch.float32)
        self.log_m_transition = None if log_m_transition is None else log_m_transition.to(dev, torch.float32)
        self.backsteps = backsteps
        self.max_nfe_per_sample = max_nfe_per_sample
        self.max_ticks = max_ticks
        self.num_slots = num_slots
        self.progress_bar = progress_bar

    # ------------------------------------------------------------------ pieces
    def log_ratio(self, x: torch.Tensor, level: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
        """Discriminator log-ratio ``[n]`` of states ``x`` (scheduler coordinates) at ``level``."""
        out = self.log_ratio_fn(self.tables.to_ve(x, level), self.tables.sigma[level], sample_ids)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0],):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the discriminator must return a log-ratio of shape [{x.shape[0]}], got {shape}"
            )
        _check_finite(out, level, "the discriminator returned a log-ratio with")
        return out.to(torch.float32)

    def fresh_noise(self, sample_ids: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Fresh level-0 states for ``sample_ids`` (``init_noise_sigma * N(0, I)``)."""
        return self.streams.randn("fresh", sample_ids, shape) * self.tables.init_noise_sigma

    def base_step(self, x: torch.Tensor, level: torch.Tensor, sample_ids: torch.Tensor):
        """One macro-step of every row from its own level; returns ``(x_next, nfe [n])``."""
        noise = None
        if self.tables.family == "ddpm":
            noise = self.streams.randn("sampler", sample_ids, tuple(x.shape[1:]), x.dtype)
        x_next, nfe = self.tables.step(
            x,
            level,
            lambda inp, t, rows: self.model_fn(inp, t, sample_ids[rows.cpu()]).to(torch.float32),
            noise,
        )
        _check_finite(x_next, level, "the UNet step from these levels produced")
        return x_next, nfe

    def _bar(self, total: int):
        return self.progress_bar(total=total) if self.progress_bar else tqdm(total=total, disable=True)

    def warmup_statistics(self, latents: torch.Tensor, sample_ids: torch.Tensor):
        """The plain base sampler from ``latents`` with the discriminator evaluated at every level
        (every test accepts): ``(marginal [n, N+1], transition [n, N+1])`` float32, ``log L_k(x_k)``
        and ``Delta_k`` (``transition[:, 0] = 0``)."""
        result = self.run(latents, sample_ids, warmup=True)
        return result.marginal, result.transition

    # ------------------------------------------------------------------ main loop
    def run(self, latents: torch.Tensor, sample_ids: torch.Tensor, warmup: bool = False) -> SamplingResult:
        """Sample one output per row of ``latents [n, C, H, W]`` (level-0 states) / ``sample_ids [n]``.

        Each tick: start tests at level 0, one macro-step of every slot, the rejection cascade, the
        NFE budget, then finished slots are harvested and refilled.
        """
        testing = self.log_ratio_fn is not None
        if testing and not warmup and (self.log_m is None or self.log_m_transition is None):
            raise ValueError("sampling with a discriminator needs log_m and log_m_transition (see calibrate)")
        N, n, out_dtype = self.tables.num_levels, latents.shape[0], latents.dtype
        latents = latents.to(torch.float32)  # states, tables and tests in fp32 whatever the model dtype
        run = _Run(
            latents=latents,
            sample_ids=sample_ids.to(torch.long).cpu(),
            result=SamplingResult.empty(latents, N, self.tables.device, warmup),
            max_ticks=self.max_ticks or 50 * N * (-(-n // self.num_slots)) + 50,
            num_slots=self.num_slots,
            bar=self._bar(n),
            warmup=warmup,
            pending=collections.deque(range(n)),
        )
        slots = run.refill(Slots.start(latents[:0].to(self.tables.device), torch.zeros(0, dtype=torch.long)))
        while len(slots):
            run.tick()
            if testing:
                self._start_tests(slots, run)
            self._advance(slots, run)
            if testing:
                self._cascade(slots, run)
            if self.max_nfe_per_sample is not None:
                self._enforce_budget(slots, run)
            slots = run.harvest(slots, N)
        run.bar.close()
        run.result.samples = run.result.samples.to(out_dtype)
        return run.result

    def _test(self, slots: Slots, rows: torch.Tensor, run: _Run, transition: bool) -> torch.Tensor:
        """Acceptance test of slots ``rows`` at their levels; bool ``[len(rows)]``, True = accepted.

        The statistic is ``Delta`` against ``log M'`` for a transition test, ``log L`` against ``log M``
        otherwise. The test is counted and an accepted slot's parent log-ratio becomes its ``log L``.
        """
        ids, level, caller_rows = run.ids(slots, rows), slots.level[rows], slots.row[rows.cpu()]
        ell = self.log_ratio(slots.x[rows], level, ids)
        statistic = ell - slots.parent_log_ratio[rows] if transition else ell
        if run.warmup:
            accepted = torch.ones_like(ell, dtype=torch.bool)
            run.result.marginal[caller_rows, level.cpu()] = ell.cpu()
            run.result.transition[caller_rows, level.cpu()] = statistic.cpu() if transition else 0.0
        else:
            log_m = (self.log_m_transition if transition else self.log_m)[level]
            accepted = acceptance_test(statistic, log_m, self.streams.rand("accept", ids).to(ell.device))
        run.result.record_tests(caller_rows, level.cpu(), accepted.cpu())
        slots.parent_log_ratio[rows[accepted]] = ell[accepted]
        return accepted

    def _start_tests(self, slots: Slots, run: _Run) -> None:
        """Test the level-0 slots at sigma_0 until each is accepted; a rejected one is redrawn."""
        rows = (slots.level == 0).nonzero(as_tuple=True)[0]
        while rows.numel():
            rows = rows[~self._test(slots, rows, run, transition=False)]
            if rows.numel():
                slots.x[rows] = self.fresh_noise(run.ids(slots, rows), tuple(slots.x.shape[1:])).to(slots.x)
                run.tick()

    def _advance(self, slots: Slots, run: _Run) -> None:
        """One macro-step of every slot from its own level (one batched model call per stage)."""
        slots.x, nfe = self.base_step(slots.x, slots.level, run.ids(slots))
        nfe = nfe.cpu()
        slots.trajectory_nfe += nfe
        run.result.nfe.index_add_(0, slots.row, nfe)
        slots.level += 1

    def _cascade(self, slots: Slots, run: _Run) -> None:
        """Transition test of every slot; each rejected slot is re-noised ``backsteps`` levels back and
        marginal-tested there, until it is accepted or reaches level 0 (start-tested next tick)."""
        rows = torch.arange(len(slots), device=slots.x.device)
        transition = True
        while rows.numel():
            rows, transition = (
                self._back_step(slots, rows[~self._test(slots, rows, run, transition)], run),
                False,
            )

    def _back_step(self, slots: Slots, rows: torch.Tensor, run: _Run) -> torch.Tensor:
        """Re-noise slots ``rows`` with the forward kernel; returns those still above level 0."""
        to = (slots.level[rows] - self.backsteps).clamp_min(0)
        noise = self.streams.randn("renoise", run.ids(slots, rows), tuple(slots.x.shape[1:]), slots.x.dtype)
        slots.x[rows] = self.tables.renoise(slots.x[rows], slots.level[rows], to, noise.to(slots.x.device))
        slots.level[rows] = to
        return rows[to > 0]

    def _enforce_budget(self, slots: Slots, run: _Run) -> None:
        """Restart from fresh noise every slot that can no longer finish within ``max_nfe_per_sample``."""
        need = slots.trajectory_nfe + self.tables.remaining_nfe(slots.level).cpu()
        rows = (need > self.max_nfe_per_sample).nonzero(as_tuple=True)[0]
        if rows.numel():
            run.result.restarts.index_add_(0, slots.row[rows], torch.ones(len(rows), dtype=torch.long))
            fresh = self.fresh_noise(run.ids(slots, rows), tuple(slots.x.shape[1:]))
            slots.restart(rows.to(slots.x.device), fresh.to(slots.x.device))
