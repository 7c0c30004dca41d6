"""The DiffRS rejection sampler: per-sample state, acceptance tests, back-steps, harvest/refill.

Notation (spec A): levels ``0..N`` (0 = start noise, ``N`` = finished), ``log L_i(x)`` the raw
discriminator logit at level ``i``. After a model step lands a sample on level ``i`` it faces the
*transition* test with statistic ``Delta_i = log L_i(x_i) - log L_{i-1}(parent)`` against ``log M'_i``;
on rejection it is re-noised ``backsteps`` levels back with the forward kernel and faces *marginal*
tests ``log L_j(x)`` against ``log M_j`` until accepted or back at level 0, where the start test of the
next tick accepts it or replaces it with fresh noise. A test accepts iff
``log(u + 1e-7) <= statistic - log M`` with ``u ~ U[0, 1)`` (ties accept, spec A.4).

Every sample owns its random streams (spec E.7): its start latents come from the caller, and
sampler noise, acceptance uniforms, back-step noise and fresh noise each come from a generator
seeded by ``(base_seed, sample_id, stream)``. A sample's trajectory therefore depends only on its own
randomness, never on which other samples share the batch: the same seeds give the same images for
any ``num_slots`` and for any split of the batch over processes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

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


class SampleStreams:
    """Independent per-sample random streams (``sampler``, ``accept``, ``renoise``, ``fresh``).

    ``base_seeds[i]`` is the seed of sample ``i``; each (sample, stream) pair gets its own
    ``torch.Generator`` seeded with a SeedSequence hash of ``(base_seed, sample_id, stream)``.
    """

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
        if len(sample_ids) == 0:
            return torch.empty((0, *shape), device=self.device, dtype=dtype)
        return torch.stack(
            [
                torch.randn(shape, generator=self._gen(int(s), stream), device=self.device, dtype=dtype)
                for s in sample_ids
            ]
        )

    def rand(self, stream: str, sample_ids: torch.Tensor) -> torch.Tensor:
        """Uniform ``[n]`` in [0, 1), entry ``j`` from sample ``sample_ids[j]``'s stream."""
        if len(sample_ids) == 0:
            return torch.empty((0,), device=self.device)
        return torch.cat(
            [torch.rand(1, generator=self._gen(int(s), stream), device=self.device) for s in sample_ids]
        )


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
    ticks: int


class RejectionSampler:
    """Asynchronous DiffRS sampler over ``num_slots`` slots, each at its own level.

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
        if not bool(torch.isfinite(out).all()):
            raise ValueError("the discriminator returned a non-finite log-ratio")
        return out.to(torch.float32)

    def fresh_noise(self, sample_ids: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Fresh level-0 states for ``sample_ids`` (``init_noise_sigma * N(0, I)``)."""
        return self.streams.randn("fresh", sample_ids, shape) * self.tables.init_noise_sigma

    def base_step(self, x: torch.Tensor, level: torch.Tensor, sample_ids: torch.Tensor):
        """One macro-step of every row from its own level; returns ``(x_next, nfe [n])``."""
        noise = None
        if self.tables.family == "ddpm":
            noise = self.streams.randn("sampler", sample_ids, tuple(x.shape[1:]), x.dtype)
        return self.tables.step(
            x, level, lambda inp, t, rows: self.model_fn(inp, t, sample_ids[rows.cpu()]), noise
        )

    # ------------------------------------------------------------------ warm-up
    def warmup_statistics(self, latents: torch.Tensor, sample_ids: torch.Tensor):
        """Run the plain base sampler and record ``log L_k(x_k)`` and ``Delta_k`` at every level.

        Returns ``(marginal [n, N+1], transition [n, N+1])`` float32 (``transition[:, 0] = 0``).
        """
        N = self.tables.num_levels
        n = latents.shape[0]
        marginal = torch.zeros(n, N + 1)
        transition = torch.zeros(n, N + 1)
        bar = self.progress_bar(total=n) if self.progress_bar else None
        for start in range(0, n, self.num_slots):
            rows = slice(start, min(n, start + self.num_slots))
            x = latents[rows].to(self.tables.device)
            sids = sample_ids[rows]
            level = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            prev = self.log_ratio(x, level, sids)
            marginal[rows, 0] = prev.cpu()
            for i in range(N):
                x, _ = self.base_step(x, level, sids)
                level = level + 1
                cur = self.log_ratio(x, level, sids)
                marginal[rows, i + 1] = cur.cpu()
                transition[rows, i + 1] = (cur - prev).cpu()
                prev = cur
            if bar is not None:
                bar.update(x.shape[0])
        if bar is not None:
            bar.close()
        return marginal, transition

    # ------------------------------------------------------------------ main loop
    def run(self, latents: torch.Tensor, sample_ids: torch.Tensor) -> SamplingResult:
        """Sample one output per row of ``latents [n, C, H, W]`` (level-0 states) / ``sample_ids [n]``."""
        tab = self.tables
        N = tab.num_levels
        dev = tab.device
        n = latents.shape[0]
        shape = tuple(latents.shape[1:])
        sample_ids = sample_ids.to(torch.long).cpu()
        test = self.log_ratio_fn is not None
        if test and (self.log_m is None or self.log_m_transition is None):
            raise ValueError("sampling with a discriminator needs log_m and log_m_transition (see calibrate)")
        max_ticks = self.max_ticks or 50 * N * (-(-n // self.num_slots)) + 50

        out = torch.empty_like(latents, device=dev)
        nfe = torch.zeros(n, dtype=torch.long)
        traj_out = torch.zeros(n, dtype=torch.long)
        disc = torch.zeros(n, dtype=torch.long)
        rejections = torch.zeros(n, dtype=torch.long)
        restarts = torch.zeros(n, dtype=torch.long)
        tests = torch.zeros(N + 1, dtype=torch.long)
        accepts = torch.zeros(N + 1, dtype=torch.long)

        pending = collections.deque(range(n))
        # Slot arrays; ``pos`` indexes the caller's rows.
        x = latents.new_empty((0, *shape), device=dev)
        level = torch.zeros(0, dtype=torch.long, device=dev)
        prev = torch.zeros(0, device=dev)
        traj = torch.zeros(0, dtype=torch.long)
        pos = torch.zeros(0, dtype=torch.long)
        start_ok = torch.zeros(0, dtype=torch.bool, device=dev)

        def refill():
            nonlocal x, level, prev, traj, pos, start_ok
            take = [pending.popleft() for _ in range(min(len(pending), self.num_slots - pos.numel()))]
            if not take:
                return
            new = torch.tensor(take, dtype=torch.long)
            x = torch.cat([x, latents[new].to(dev)])
            level = torch.cat([level, torch.zeros(len(take), dtype=torch.long, device=dev)])
            prev = torch.cat([prev, torch.zeros(len(take), device=dev)])
            traj = torch.cat([traj, torch.zeros(len(take), dtype=torch.long)])
            pos = torch.cat([pos, new])
            start_ok = torch.cat([start_ok, torch.full((len(take),), not test, device=dev)])

        def count(counter, rows_pos, amount=1):
            counter.index_add_(
                0, rows_pos, torch.as_tensor(amount, dtype=torch.long).expand(rows_pos.numel()).clone()
            )

        def tick_guard(ticks):
            if ticks > max_ticks:
                finished = n - len(pending) - pos.numel()
                raise RuntimeError(
                    f"DiffRS stopped after max_ticks={max_ticks} ticks with {finished} of {n} samples finished "
                    f"({int(rejections.sum())} rejections, {int(restarts.sum())} restarts so far). The "
                    "discriminator rejects almost everything at these thresholds: lower rejection_percentile, "
                    "use clamp_log_m=False, set max_nfe_per_sample, or raise max_ticks."
                )

        bar = self.progress_bar(total=n) if self.progress_bar else None
        refill()
        ticks = 0
        while pos.numel():
            ticks += 1
            tick_guard(ticks)
            # (1) start test: every level-0 slot is accepted at sigma_0 or redrawn.
            while test:
                rows = ((level == 0) & ~start_ok).nonzero(as_tuple=True)[0]
                if rows.numel() == 0:
                    break
                sids = sample_ids[pos[rows.cpu()]]
                ell = self.log_ratio(x[rows], level[rows], sids)
                acc = acceptance_test(ell, self.log_m[0], self.streams.rand("accept", sids).to(dev))
                count(disc, pos[rows.cpu()])
                tests[0] += rows.numel()
                accepts[0] += int(acc.sum())
                prev[rows[acc]] = ell[acc]
                start_ok[rows[acc]] = True
                rej = rows[~acc]
                if rej.numel():
                    rpos = pos[rej.cpu()]
                    count(rejections, rpos)
                    x[rej] = self.fresh_noise(sample_ids[rpos], shape).to(x.dtype).to(dev)
                    ticks += 1
                    tick_guard(ticks)
            # (2) one macro-step for every slot, each from its own level.
            sids = sample_ids[pos]
            x, step_nfe = self.base_step(x, level, sids)
            step_nfe = step_nfe.cpu()
            traj += step_nfe
            nfe.index_add_(0, pos, step_nfe)
            level = level + 1
            # (3) rejection cascade: transition test first, then marginal re-tests after back-steps.
            if test:
                active = torch.arange(pos.numel(), device=dev)
                first = True
                while active.numel():
                    apos = pos[active.cpu()]
                    asid = sample_ids[apos]
                    lv = level[active]
                    ell = self.log_ratio(x[active], lv, asid)
                    count(disc, apos)
                    stat = ell - prev[active] if first else ell
                    thr = self.log_m_transition[lv] if first else self.log_m[lv]
                    acc = acceptance_test(stat, thr, self.streams.rand("accept", asid).to(dev))
                    tests.index_add_(0, lv.cpu(), torch.ones(lv.numel(), dtype=torch.long))
                    accepts.index_add_(0, lv[acc].cpu(), torch.ones(int(acc.sum()), dtype=torch.long))
                    prev[active[acc]] = ell[acc]
                    rej = active[~acc]
                    if rej.numel():
                        rpos = pos[rej.cpu()]
                        count(rejections, rpos)
                        to = (level[rej] - self.backsteps).clamp_min(0)
                        noise = self.streams.randn("renoise", sample_ids[rpos], shape, x.dtype).to(dev)
                        x[rej] = tab.renoise(x[rej], level[rej], to, noise)
                        level[rej] = to
                        start_ok[rej[to == 0]] = False
                        rej = rej[to > 0]
                    active = rej
                    first = False
            # (4) budget: abandon trajectories that can no longer finish within max_nfe_per_sample.
            if self.max_nfe_per_sample is not None:
                over = (traj + tab.remaining_nfe(level).cpu()) > self.max_nfe_per_sample
                if bool(over.any()):
                    rows = over.nonzero(as_tuple=True)[0]
                    count(restarts, pos[rows])
                    rd = rows.to(dev)
                    x[rd] = self.fresh_noise(sample_ids[pos[rows]], shape).to(x.dtype).to(dev)
                    level[rd] = 0
                    prev[rd] = 0.0
                    traj[rows] = 0
                    start_ok[rd] = not test
            # (5) harvest finished slots and refill them.
            done = level == N
            if bool(done.any()):
                dc = done.cpu()
                out[pos[dc]] = x[done]
                traj_out[pos[dc]] = traj[dc]
                keep, kc = ~done, ~dc
                x, level, prev, start_ok = x[keep], level[keep], prev[keep], start_ok[keep]
                traj, pos = traj[kc], pos[kc]
                if bar is not None:
                    bar.update(int(dc.sum()))
                refill()
        if bar is not None:
            bar.close()
        return SamplingResult(
            samples=out,
            nfe=nfe,
            trajectory_nfe=traj_out,
            discriminator_evals=disc,
            rejections=rejections,
            restarts=restarts,
            tests_per_level=tests,
            accepts_per_level=accepts,
            ticks=ticks,
        )
