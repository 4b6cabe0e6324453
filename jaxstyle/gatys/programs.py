"""The compiled programs of Gatys' method, on a batch of same-shape images.

Each program is a ``jax.jit`` function whose first two arguments are static: the settings that
shape it (:func:`program_config`: a frozen, hashable :class:`GatysConfig`) and the per-image
loss (:func:`jaxstyle.gatys.objective.objective` unless a caller passes another). JAX's own jit
cache, keyed on them and on the argument shapes, reuses a program across calls in a process;
loss weights, targets and images are arguments, so a sweep over weights compiles once.

The per-image problem is ``vmap``-ed: every image keeps its own optimiser state, exactly as if
it were optimised alone, while the network runs on the whole batch at once.

A *chunk* runs up to ``n`` iterations per image (between progress reports) in one of two loop
kinds (``GatysConfig.loop``, chosen per backend by
:func:`jaxstyle.backend.default_loop_kind` when ``"auto"``): ``device``, one ``lax.while_loop``
program; ``host``, a Python loop over compiled steps (with L-BFGS's careful start, one program
only, :func:`trial_step`: see :func:`trial_only`). Both run the same traced step and give the
same iterates. An image whose loss diverges (non-finite, or above
``EXPLODE_FACTOR`` times its best for ``EXPLODE_PATIENCE`` iterations in a row) stops its chunk
there; the driver then :func:`restart` s it from its best iterate.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle import backend
from jaxstyle.configs import GatysConfig
from jaxstyle.gatys.lbfgs import BACKTRACK_TRIALS, make_optimizer

#: The ``jax.monitoring`` events of tracing, lowering and compiling a program: none fires when
#: a program is found cached.
COMPILE_EVENTS = frozenset(
    f"/jax/core/compile/{e}"
    for e in ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")
)


@contextlib.contextmanager
def compile_seconds() -> Iterator[list[float]]:
    """Yields ``spent``; ``spent[0]`` becomes the seconds this thread spends tracing, lowering
    and compiling inside the block (0.0 when every program is found cached). Other threads'
    compilations (:func:`precompile`'s background thread) are not counted."""
    spent, me = [0.0], threading.get_ident()

    def listen(event: str, seconds: float, **_: Any) -> None:
        if event in COMPILE_EVENTS and threading.get_ident() == me:
            spent[0] += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield spent
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


#: A loss above this multiple of the image's best loss for EXPLODE_PATIENCE iterations in a row
#: counts as divergence (a non-finite loss at once). L-BFGS without a line search has brief
#: spikes of 10-1000x that it recovers from by itself; those are let through.
EXPLODE_FACTOR = 100.0
EXPLODE_PATIENCE = 3
#: The columns of a chunk's per-iteration history.
HIST = ("total", "content", "style", "tv", "nfev")
#: in_axes of the arguments after the images: net and weights shared, targets per image.
_SHARED = (None, 0, 0, None)

Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


class Carry(NamedTuple):
    """What the optimisation of a batch carries from one iteration to the next."""

    x: jax.Array  # (B, H, W, 3) current iterates
    state: Any  # optimiser states (batched)
    best_x: jax.Array  # (B, H, W, 3) best finite iterates so far
    best_v: jax.Array  # (B,) their losses
    high: jax.Array  # (B,) iterations in a row with a loss above EXPLODE_FACTOR * best_v


def chunk_len(cfg: GatysConfig) -> int:
    """Most iterations between progress reports (and intermediate saves)."""
    return cfg.progress_every if cfg.save_every <= 0 else min(cfg.progress_every, cfg.save_every)


def loop_kind(cfg: GatysConfig) -> str:
    """``cfg.loop``, with ``"auto"`` resolved for this backend."""
    kind = backend.default_loop_kind() if cfg.loop == "auto" else cfg.loop
    if kind not in backend.LOOP_KINDS:
        raise ValueError(f"unknown loop kind {cfg.loop!r}; choose auto, device or host")
    return kind


def program_config(cfg: GatysConfig) -> GatysConfig:
    """``cfg`` reduced to what the programs depend on; every other field at its default.

    This is the static argument of the programs, so settings that are arguments (loss weights)
    or that only the driver uses (sizes, iterations, seed...) do not cause a recompilation.
    """
    return GatysConfig(
        optimizer=cfg.optimizer,
        lr=cfg.lr if cfg.optimizer == "adam" else GatysConfig.lr,
        linesearch=cfg.linesearch,
        history_size=cfg.history_size,
        progress_every=chunk_len(cfg),
        content_layers=tuple(cfg.content_layers),
        style_layers=tuple(cfg.style_layers),
        loop=loop_kind(cfg),
    )


def _optimizer(cfg: GatysConfig, objective: Objective):
    cl, sl = tuple(cfg.content_layers), tuple(cfg.style_layers)

    def fun(x, net, content_t, style_g, weights):
        return objective(x, net, content_t, style_g, weights, cl, sl)

    return make_optimizer(cfg, fun), fun


def _select(mask: jax.Array, a, b):
    """Per image: the leaves of ``a`` where ``mask`` (B,), else those of ``b``."""

    def pick(u, v):
        return jnp.where(mask.reshape(mask.shape + (1,) * (u.ndim - 1)), u, v)

    return jax.tree_util.tree_map(pick, a, b)


@functools.partial(jax.jit, static_argnums=(0, 1))
def init(cfg: GatysConfig, objective: Objective, x: jax.Array, *args) -> Carry:
    """The starting carry of a batch: optimiser states at ``x``, ``x`` its best so far."""
    opt, _ = _optimizer(cfg, objective)
    state, value = jax.vmap(opt.init, in_axes=(0, *_SHARED))(x, *args)
    return Carry(x, state, x, value, jnp.zeros(x.shape[:1], jnp.int32))


def trial_only(cfg: GatysConfig, objective: Objective) -> bool:
    """Whether every evaluation of the host loop runs in :func:`trial_step`: L-BFGS with
    unit steps, whose careful start backtracks. Then the start (:func:`start`) and the unit
    steps (a first trial, kept whatever its loss: the same step) call it too, and a run
    compiles one program that evaluates the loss and gradient instead of three (``init``
    1.7 s, the trial 2.5 s and the unit step at 256 px on 2 CPU cores, measured)."""
    opt, _ = _optimizer(cfg, objective)
    return cfg.loop == "host" and opt.careful_start


@functools.partial(jax.jit, static_argnums=(0, 1))
def _blank(cfg: GatysConfig, objective: Objective, x: jax.Array, *args) -> Carry:
    """A carry at ``x`` whose first trial evaluates the loss at ``x`` (``LBFGS.blank``)."""
    opt, _ = _optimizer(cfg, objective)
    state = jax.vmap(opt.blank, in_axes=(0, *_SHARED))(x, *args)
    inf = jnp.full(x.shape[:1], jnp.inf, jnp.float32)
    return Carry(x, state, x, inf, jnp.zeros(x.shape[:1], jnp.int32))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_from(cfg: GatysConfig, objective: Objective, x: jax.Array, evaluated: Carry) -> Carry:
    """:func:`init`'s carry from ``evaluated``, a :func:`_blank` carry after its trial."""
    opt, _ = _optimizer(cfg, objective)
    s = evaluated.state
    state, value = jax.vmap(opt.init_from)(x, s.value, s.aux, s.grad)
    return Carry(x, state, x, value, jnp.zeros(x.shape[:1], jnp.int32))


def start(cfg: GatysConfig, objective: Objective, x: jax.Array, *args) -> Carry:
    """:func:`init`'s carry; with :func:`trial_only`, evaluated by :func:`trial_step`."""
    if not trial_only(cfg, objective):
        return init(cfg, objective, x, *args)
    b = x.shape[0]
    blank = _blank(cfg, objective, x, *args)
    evaluated = trial_step(cfg, objective, blank, np.ones(b, bool), np.int32(0), *args)
    return _init_from(cfg, objective, x, evaluated[0])


@functools.partial(jax.jit, static_argnums=(0, 1))
def evaluate(cfg: GatysConfig, objective: Objective, x: jax.Array, *args):
    """``(total (B,), terms)`` of a batch of images."""
    _, fun = _optimizer(cfg, objective)
    return jax.vmap(fun, in_axes=(0, *_SHARED))(x, *args)


def losses(cfg: GatysConfig, objective: Objective, x: jax.Array, *args):
    """``(total (B,), terms)`` of a batch of images: :func:`evaluate`, or with
    :func:`trial_only` the first trial of a blank carry, so that a run compiles no second
    program that evaluates the loss (1.1 s at 256 px on 2 CPU cores, measured) for the sake
    of the final losses. That trial evaluates the gradient as well (about 0.2 s more)."""
    if not trial_only(cfg, objective):
        return evaluate(cfg, objective, x, *args)
    blank = _blank(cfg, objective, x, *args)
    evaluated = trial_step(cfg, objective, blank, np.ones(x.shape[0], bool), np.int32(0), *args)
    state = evaluated[0].state
    return state.value, state.aux


def restart(cfg: GatysConfig, objective: Objective, carry: Carry, failed: jax.Array, *args):
    """Re-initialises the optimiser of the ``failed`` (B,) images at their best iterate."""
    if not trial_only(cfg, objective):
        return _restart(cfg, objective, carry, failed, *args)
    return _restarted(failed, start(cfg, objective, carry.best_x, *args), carry)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _restart(cfg: GatysConfig, objective: Objective, carry: Carry, failed: jax.Array, *args):
    return _restarted(failed, init(cfg, objective, carry.best_x, *args), carry)


@jax.jit
def _restarted(failed: jax.Array, fresh: Carry, carry: Carry) -> Carry:
    fresh = fresh._replace(best_x=carry.best_x, best_v=carry.best_v)
    return _select(failed, fresh, carry)


def _needs_care(cfg: GatysConfig, objective: Objective, carry: Carry, active: jax.Array):
    """Whether the next step backtracks: while any active image's history is still short."""
    opt, _ = _optimizer(cfg, objective)
    if not opt.careful_start:
        return jnp.asarray(False)
    return jnp.any(active & jax.vmap(opt.needs_care)(carry.state))


needs_care = jax.jit(_needs_care, static_argnums=(0, 1))


def _step(
    cfg: GatysConfig,
    objective: Objective,
    carry: Carry,
    active: jax.Array,
    args,
    trial: jax.Array | None = None,
):
    """One iteration of the ``active`` (B,) images, with the divergence bookkeeping: a unit
    step, or with ``trial=k`` the ``k``-th backtracking trial from ``carry`` (see
    :meth:`jaxstyle.gatys.lbfgs.LBFGS.step`; :func:`careful_step` loops over them).

    Whether a step backtracks is chosen by the caller, outside the compiled step: a
    ``lax.cond`` between the two steps in one program made every step, unit steps included,
    about twice as slow on XLA:CPU (0.91 s against 0.45 s an iteration at 256 px, measured).

    Returns ``(carry, row (B, len(HIST)), sane (B,), accepted (B,))``; inactive images are
    left unchanged. A trial's result is meant to be kept only where ``accepted``.
    """
    opt, _ = _optimizer(cfg, objective)
    one = functools.partial(opt.step, trial=trial)
    out = jax.vmap(one, in_axes=(0, 0, *_SHARED))(carry.x, carry.state, *args)
    value = out.value
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(out.x), axis=(1, 2, 3))
    high = jnp.where(value > EXPLODE_FACTOR * carry.best_v, carry.high + 1, 0)
    sane = finite & (high < EXPLODE_PATIENCE)
    better = active & finite & (value < carry.best_v)
    new = Carry(
        x=out.x,
        state=out.state,
        best_x=_select(better, out.at, carry.best_x),
        best_v=jnp.where(better, value, carry.best_v),
        high=high,
    )
    terms = out.terms
    row = jnp.stack([value, terms["content"], terms["style"], terms["tv"], out.nfev], axis=1)
    return _select(active, new, carry), row.astype(jnp.float32), sane, out.accepted


@functools.partial(jax.jit, static_argnums=(0, 1))
def step(cfg: GatysConfig, objective: Objective, carry: Carry, active: jax.Array, *args):
    """One compiled unit step of :func:`_step`: a program the host loop calls."""
    return _step(cfg, objective, carry, active, args)[:3]


@functools.partial(jax.jit, static_argnums=(0, 1))
def trial_step(
    cfg: GatysConfig, objective: Objective, carry: Carry, active: jax.Array, k: jax.Array, *args
):
    """One compiled backtracking trial (``k``: an int32 scalar) of :func:`_step`; with
    :func:`trial_only` the only program of the host loop that evaluates the loss (see
    :func:`careful_step`)."""
    return _step(cfg, objective, carry, active, args, k)


_merge = jax.jit(_select)


def careful_step(cfg: GatysConfig, objective: Objective, carry: Carry, active: np.ndarray, *args):
    """One backtracking iteration of the ``active`` images as a host loop over
    :func:`trial_step`: each image keeps its first accepted trial. The trials are not a
    compiled loop because XLA:CPU ran an evaluation inside a loop body about twice as slowly
    as in a program of its own (measured at 256 px: 0.88 s against 0.41 s a trial), and most
    careful iterations need only the first trial. Returns ``(carry, row, sane)`` as
    :func:`step`, as numpy arrays but the carry."""
    pending = np.asarray(active, bool).copy()
    out, rows, sane = None, None, np.ones(pending.shape, bool)
    for k in range(BACKTRACK_TRIALS):
        new, row, ok, accepted = trial_step(
            cfg, objective, carry, pending.copy(), np.int32(k), *args
        )
        row, ok = np.asarray(row), np.asarray(ok)
        take = pending & np.asarray(accepted)
        if take.any():
            if out is None and (take == pending).all():
                out = new  # (the common case: one merge-free trial)
            else:
                out = _merge(take, new, carry if out is None else out)
            rows = row if rows is None else np.where(take[:, None], row, rows)
            sane = np.where(take, ok, sane)
        pending &= ~take
        if not pending.any():
            break
    return out, rows, sane


def _device_careful_step(cfg: GatysConfig, objective: Objective, carry: Carry, active, args):
    """:func:`careful_step` as a compiled loop, for the device loop."""
    b = active.shape[0]

    def cond(c):
        return jnp.any(c[1])

    def body(c):
        k, pending, out, rows, sane = c
        new, row, ok, accepted = _step(cfg, objective, carry, pending, args, k)
        take = pending & accepted
        out = _select(take, new, out)
        rows = jnp.where(take[:, None], row, rows)
        return k + 1, pending & ~take, out, rows, jnp.where(take, ok, sane)

    rows = jnp.zeros((b, len(HIST)), jnp.float32)
    c = (jnp.zeros((), jnp.int32), active, carry, rows, jnp.ones((b,), bool))
    _, _, out, rows, sane = jax.lax.while_loop(cond, body, c)
    return out, rows, sane


@functools.partial(jax.jit, static_argnums=(0, 1))
def device_chunk(cfg: GatysConfig, objective: Objective, carry: Carry, n: jax.Array, *args):
    """Up to ``n`` (B,) iterations per image in one ``lax.while_loop``; see :func:`run_chunk`."""
    b = n.shape[0]

    def active(c):
        i, _, _, _, ok = c
        return (i < n) & ok

    def body(careful: bool):
        def one(c):
            i, carry, hist, steps, ok = c
            act = active(c)
            if careful:
                carry, row, sane = _device_careful_step(cfg, objective, carry, act, args)
            else:
                carry, row, sane, _ = _step(cfg, objective, carry, act, args)
            hist = hist.at[:, i].set(jnp.where(act[:, None], row, hist[:, i]))
            return i + 1, carry, hist, steps + act, ok & ~(act & ~sane)

        return one

    def care(c):
        return jnp.any(active(c)) & _needs_care(cfg, objective, c[1], active(c))

    hist = jnp.zeros((b, chunk_len(cfg), len(HIST)), jnp.float32)
    zeros = jnp.zeros((b,), jnp.int32)
    c = (jnp.zeros((), jnp.int32), carry, hist, zeros, jnp.ones((b,), bool))
    # Backtracking steps while any image needs them, then unit steps: two loops, not a cond
    # per step (see _step). Within a chunk, care only ends: restarts happen between chunks.
    c = jax.lax.while_loop(care, body(True), c)
    _, carry, hist, steps, ok = jax.lax.while_loop(lambda c: jnp.any(active(c)), body(False), c)
    return carry, hist, steps, ok


def host_chunk(cfg: GatysConfig, objective: Objective, carry: Carry, n: np.ndarray, *args):
    """Up to ``n`` (B,) iterations per image, a Python loop over :func:`step` and
    :func:`careful_step`."""
    n = np.asarray(n)
    b = n.shape[0]
    hist = np.zeros((b, chunk_len(cfg), len(HIST)), np.float32)
    steps = np.zeros(b, np.int32)
    ok = np.ones(b, bool)
    only = trial_only(cfg, objective)
    for i in range(int(n.max(initial=0))):
        act = (i < n) & ok
        if not act.any():
            break
        act_j = jax.device_put(act)  # (jnp.asarray compiles a program on JAX 0.10)
        if bool(needs_care(cfg, objective, carry, act_j)):
            carry, row, sane = careful_step(cfg, objective, carry, act, *args)
        elif only:  # a unit step: the first trial, kept whatever its loss
            unit = trial_step(cfg, objective, carry, act_j, np.int32(0), *args)
            carry, row, sane = unit[:3]
        else:
            carry, row, sane = step(cfg, objective, carry, act_j, *args)
        row, sane = np.asarray(row), np.asarray(sane)
        hist[act, i] = row[act]
        steps += act
        ok &= ~(act & ~sane)
    return carry, hist, steps, ok


def run_chunk(cfg: GatysConfig, objective: Objective, carry: Carry, n: np.ndarray, *args):
    """Up to ``n[b]`` iterations of image ``b``, in the loop kind of ``cfg`` (already reduced
    by :func:`program_config`).

    Returns:
        ``(carry, hist (B, chunk_len, len(HIST)), steps (B,), ok (B,))`` as numpy arrays but
        the carry: ``steps[b]`` iterations ran, recorded in ``hist[b, :steps[b]]``; ``ok[b]``
        is False when image ``b`` diverged at its last step.
    """
    if cfg.loop == "device":
        out = device_chunk(cfg, objective, carry, jnp.asarray(n, jnp.int32), *args)
    elif cfg.loop == "host":
        out = host_chunk(cfg, objective, carry, n, *args)
    else:
        raise ValueError(f"loop kind {cfg.loop!r} is not resolved; use program_config(cfg)")
    carry, hist, steps, ok = out
    return carry, np.asarray(hist), np.asarray(steps), np.asarray(ok)


def precompile(
    cfg: GatysConfig, objective: Objective, final: bool, x: jax.Array, *args
) -> Callable[[], float]:
    """Compiles the first program that :func:`start` runs for ``x`` here, and meanwhile, in a
    background thread, the programs that it and the iterations from it call next
    and, with ``final``, :func:`evaluate`. With :func:`trial_only` the first is the
    backtracking trial, which every later evaluation runs too (the final losses' included:
    :func:`losses`); otherwise it is :func:`init`,
    followed by the unit step of the host loop or by the device loop's chunk.

    XLA compiles without holding Python's lock, so the background programs compile while this
    thread compiles and runs the first. That one is traced first, here, so that a convolution
    form measured by :mod:`jaxstyle.autotune` is measured by one thread only, the other finding
    it cached. JAX keeps what ``lower().compile()`` builds, so the calls that follow reuse it.

    Returns ``wait()``, which blocks until the background programs are built (raising their
    error, if any) and returns the seconds it waited for a compilation (0.0 when the
    background found every program cached); call it before the first step.
    """
    b = x.shape[0]
    active = jax.ShapeDtypeStruct((b,), jnp.bool_)
    jobs = []
    if trial_only(cfg, objective):
        # (The traced outputs keep the weak types that key the cache; ``lowered.out_info``
        # drops them.) Every carry has the blank carry's types (``LBFGS.init_from``).
        blank = _blank.trace(cfg, objective, x, *args)
        carry = blank.out_info
        k = jax.ShapeDtypeStruct((), jnp.int32)
        first = trial_step.trace(cfg, objective, carry, active, k, *args)
        lowered = [blank.lower(), first.lower()]
        jobs.append(lambda: _init_from.lower(cfg, objective, x, carry).compile())
    else:
        traced = init.trace(cfg, objective, x, *args)  # (cached after the first call)
        lowered = [traced.lower()]
        carry = traced.out_info
        if cfg.loop == "device":
            n = jax.ShapeDtypeStruct((b,), jnp.int32)
            jobs.append(lambda: device_chunk.lower(cfg, objective, carry, n, *args).compile())
        else:
            jobs.append(lambda: step.lower(cfg, objective, carry, active, *args).compile())
    if final and not trial_only(cfg, objective):  # (else :func:`losses` runs the trial)
        xs = jax.ShapeDtypeStruct(x.shape, jnp.float32)
        jobs.append(lambda: evaluate.lower(cfg, objective, xs, *args).compile())

    def build() -> bool:
        """Runs the jobs; True when any of them traced, lowered or compiled (rather than
        finding everything cached)."""
        with compile_seconds() as spent:
            for job in jobs:
                job()
        return spent[0] > 0.0

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxstyle-compile")
    future = pool.submit(build)
    pool.shutdown(wait=False)
    for program in lowered:
        program.compile()

    def wait() -> float:
        t0 = time.perf_counter()
        built = future.result()
        return time.perf_counter() - t0 if built else 0.0

    return wait
