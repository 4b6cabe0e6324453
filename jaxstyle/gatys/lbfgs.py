"""The optimisers of one image, behind one ``init``/``step`` interface: jaxopt L-BFGS, optax Adam.

Everything here works on one image; :mod:`jaxstyle.gatys.programs` ``vmap``-s it over a batch.
The only code that edits jaxopt's L-BFGS state is :func:`adjust_lbfgs_state` (its test fails
loudly if jaxopt's state layout changes).

L-BFGS runs without a line search by default: unit steps along the L-BFGS direction, one
function evaluation per iteration, as torch.optim.LBFGS and neural-style do. Measured at 128 px
over 40 iterations it reached a lower loss than jaxopt's zoom line search with 41 instead of
108 evaluations. But while its history is short its curvature model can be far off: on the demo
images the 5th unit step raised the loss 400,000-fold, which the divergence guard reported and
restarted. So the first ``CAREFUL_ITERATIONS`` iterations (after the start and after every
restart) backtrack from the unit step until the loss falls enough (Armijo), which costs an
extra evaluation only when the unit step was too long.

Backtracking is done one trial at a time (:meth:`LBFGS.step` with ``trial=k``: the step of
length ``BACKTRACK_FACTOR**k``, one function evaluation), so that the caller can loop over the
trials where it runs fastest: on the host on XLA:CPU, whose loop bodies ran the same
evaluation about twice as slowly as a program without a loop (0.88 s against 0.41 s at 256 px,
measured), inside the compiled loop on accelerators.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxstyle.configs import GatysConfig

#: Largest pixel change of the first L-BFGS step, in [0, 1] units. jaxopt's first direction is
#: ``-grad``, and with losses ~1e5 a unit step along it is far too long.
FIRST_STEP = 0.05
#: A stored curvature pair with ``rho = 1 / s.y`` outside (0, MAX_RHO] is dropped.
MAX_RHO = 1e10
#: Iterations (from the start and from each restart) that backtrack from the unit step.
CAREFUL_ITERATIONS = 10
#: Backtracking: the step shrinks by this factor per trial, at most this many trials.
BACKTRACK_FACTOR = 0.5
BACKTRACK_TRIALS = 12


class Step(NamedTuple):
    """One iteration's (or backtracking trial's) result for one image."""

    x: jax.Array  # the next iterate
    state: Any  # the optimiser state at ``x``
    at: jax.Array  # the iterate whose loss ``value`` is (Adam: the previous one)
    value: jax.Array  # its loss (L-BFGS: before the projection onto [0, 1])
    terms: dict[str, jax.Array]  # its terms
    nfev: jax.Array  # function evaluations since ``init``
    accepted: jax.Array  # False for a backtracking trial whose loss did not fall enough


def adjust_lbfgs_state(state, prev=None):
    """The one place that edits jaxopt's ``LbfgsState`` (fields used: ``grad``, ``gamma``,
    ``iter_num``, ``rho_history``).

    * ``prev is None`` (``state`` fresh from ``init_state``): scale the first direction
      ``-gamma * grad`` so its largest pixel change is :data:`FIRST_STEP` (torch.optim.LBFGS
      scales by ``1/|g|_1`` for the same reason); later steps use L-BFGS's own scaling.
    * otherwise (``state = update(x, prev)``): the curvature guard. Without a line search
      nothing guarantees ``s.y > 0``; jaxopt stores the pair anyway (in slot
      ``prev.iter_num % history_size``), and a negative ``rho`` (or ``gamma``) turns the next
      direction uphill: the loss climbs and stalls (seen on the demo images). Such a pair is
      dropped (``rho = 0``) and ``gamma`` kept, as torch.optim.LBFGS skips pairs with
      ``y.s <= 1e-10``.
    """
    if prev is None:
        scale = FIRST_STEP / (jnp.max(jnp.abs(state.grad)) + 1e-12)
        return state._replace(gamma=scale.astype(state.gamma.dtype))
    slot = prev.iter_num % state.rho_history.shape[0]
    rho = state.rho_history[slot]
    bad = ~(rho > 0) | (rho > MAX_RHO)
    return state._replace(
        rho_history=state.rho_history.at[slot].set(jnp.where(bad, 0.0, rho)),
        gamma=jnp.where(bad, prev.gamma, state.gamma),
    )


class LBFGS:
    """Projected L-BFGS (jaxopt) on one image: every iterate is clipped to [0, 1]."""

    def __init__(self, cfg: GatysConfig, fun):
        import jaxopt

        common = dict(
            fun=fun, has_aux=True, history_size=cfg.history_size, tol=0.0, maxiter=1 << 30
        )
        #: Whether the first iterations need backtracking (only when steps are unit steps).
        self.careful_start = cfg.linesearch == "none"
        if cfg.linesearch == "none":
            self.solver = jaxopt.LBFGS(stepsize=1.0, **common)
        else:
            self.solver = jaxopt.LBFGS(linesearch=cfg.linesearch, **common)
        # A "line search" of one trial at ``state.stepsize`` ("current"); see ``step``.
        self.trial = jaxopt.LBFGS(linesearch=_one_trial(fun), linesearch_init="current", **common)
        # The same solver's states, from a loss, its terms and its gradient given as arguments
        # (``init_from``, ``blank``): jaxopt's ``init_state`` with no evaluation of ``fun``.
        common.update(fun=_given, value_and_grad=True)
        self.given = jaxopt.LBFGS(**common)
        self.fun = fun

    def init(self, x: jax.Array, *args) -> tuple[Any, jax.Array]:
        """Returns ``(state, loss at x)``."""
        state = adjust_lbfgs_state(self.solver.init_state(x, *args))
        return state, state.value

    def init_from(self, x: jax.Array, value, terms, grad) -> tuple[Any, jax.Array]:
        """:meth:`init` from the loss at ``x``, its terms and its gradient, computed
        elsewhere: the host loop takes them from :meth:`blank`'s first trial, so that one
        compiled program, not two, evaluates the loss and gradient."""
        state = adjust_lbfgs_state(self.given.init_state(x, *_strong((value, terms, grad))))
        return state, state.value

    def blank(self, x: jax.Array, *args):
        """A state at ``x`` whose first backtracking trial (``k = 0``) evaluates the loss and
        gradient at ``x`` itself: its gradient is zero, so its direction is, and its loss is
        infinite, so the trial is accepted. (Its other fields are :meth:`init_from`'s.)"""
        value, terms = jax.eval_shape(self.fun, x, *args)
        zeros = jax.tree_util.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), terms)
        inf = jnp.full(value.shape, jnp.inf, value.dtype)
        return self.given.init_state(x, inf, zeros, jnp.zeros_like(x))

    def needs_care(self, state) -> jax.Array:
        """Whether this image's next step should backtrack (its history is still short)."""
        return jnp.asarray(self.careful_start) & (state.iter_num < CAREFUL_ITERATIONS)

    def step(self, x: jax.Array, state, *args, trial: jax.Array | None = None) -> Step:
        """One iteration: a unit step, or with ``trial=k`` (an int scalar, 0 first) the
        ``k``-th backtracking trial, the step ``BACKTRACK_FACTOR**k`` along the same direction.

        A trial is ``accepted`` when the loss fell enough (Armijo); the caller then keeps it
        and otherwise tries ``k + 1`` from the same ``x`` and ``state``; trial
        ``BACKTRACK_TRIALS - 1`` is accepted whatever its loss. The evaluations of the
        rejected trials are counted in ``nfev``. The caller (:mod:`jaxstyle.gatys.programs`)
        asks for trials for a whole batch while any of its images :meth:`needs_care`:
        choosing per image under ``vmap`` would compute both updates for every image at every
        iteration.
        """
        if trial is None:
            new_x, new_state = self.solver.update(x, state, *args)
            accepted = jnp.asarray(True)
        else:
            dtype = state.stepsize.dtype
            start = state._replace(
                stepsize=jnp.asarray(BACKTRACK_FACTOR, dtype) ** trial.astype(dtype),
                num_fun_eval=state.num_fun_eval + trial.astype(state.num_fun_eval.dtype),
            )
            new_x, new_state = self.trial.update(x, start, *args)
            accepted = ~new_state.failed_linesearch | (trial >= BACKTRACK_TRIALS - 1)
        new_state = adjust_lbfgs_state(new_state, state)
        # Projected L-BFGS: keep the image in [0, 1]. Unconstrained L-BFGS pushes ~3% of pixels
        # out of range, and clipping them afterwards raised the loss by ~20% at 128 px;
        # projecting every step ended 14% lower at the same cost (jaxopt's LBFGSB ended higher
        # still, and slower). The loss reported is the one before projection.
        new_x = jnp.clip(new_x, 0.0, 1.0)
        return Step(
            new_x,
            new_state,
            new_x,
            new_state.value,
            new_state.aux,
            new_state.num_fun_eval,
            accepted,
        )


def _given(x, value, terms, grad):
    """A "loss" that returns the loss, terms and gradient it is given (see ``LBFGS.given``)."""
    return (value, terms), grad


def _strong(tree):
    """``tree`` with no weak types, so that states built from it have one signature."""
    return jax.tree_util.tree_map(lambda v: jax.lax.convert_element_type(v, v.dtype), tree)


def _one_trial(fun):
    """A jaxopt line search that evaluates one step size, the one it is given: its state is
    ``failed`` when the Armijo condition does not hold (jaxopt's own backtracking tests a step
    with the loss alone and evaluates the gradient of the accepted one; here the gradient comes
    with the loss, since an accepted step needs it and most first trials are accepted)."""
    import jaxopt
    from jaxopt import tree_util as tu

    class OneTrial(jaxopt.BacktrackingLineSearch):
        def run(
            self,
            init_stepsize,
            params,
            value=None,
            grad=None,
            descent_direction=None,
            fun_args=(),
            fun_kwargs=None,
        ):
            kwargs = fun_kwargs or {}
            state = self.init_state(
                init_stepsize, params, value, grad, descent_direction, fun_args, kwargs
            )
            new = tu.tree_add_scalar_mul(params, init_stepsize, descent_direction)
            (new_value, aux), new_grad = self._value_and_grad_fun_with_aux(new, *fun_args, **kwargs)
            slope = tu.tree_vdot_real(grad, descent_direction)
            armijo = new_value <= value + self.c1 * init_stepsize * slope  # False for NaN
            one = jnp.ones((), state.num_fun_eval.dtype)
            state = state._replace(
                iter_num=jnp.ones_like(state.iter_num),
                params=new,
                value=new_value,
                grad=new_grad,
                aux=aux,
                done=armijo,
                failed=~armijo,
                num_fun_eval=one,
                num_grad_eval=one,
            )
            return init_stepsize, state  # (jaxopt's LBFGS unpacks a (stepsize, state) pair)

    return OneTrial(fun=fun, has_aux=True, value_and_grad=False, max_stepsize=1.0)


class Adam:
    """Projected Adam (optax) on one image: one gradient per step, iterates kept in [0, 1]."""

    careful_start = False

    def __init__(self, cfg: GatysConfig, fun):
        import optax

        self.fun = fun
        self.tx = optax.adam(cfg.lr)

    def init(self, x: jax.Array, *args) -> tuple[Any, jax.Array]:
        """Returns ``(state, loss at x)``; the state counts function evaluations too."""
        value, _ = self.fun(x, *args)
        return (self.tx.init(x), jnp.ones((), jnp.int32)), value

    def needs_care(self, state) -> jax.Array:
        return jnp.asarray(False)

    def step(self, x: jax.Array, state, *args, trial: jax.Array | None = None) -> Step:
        """One Adam step; reports the loss of ``x`` (the point whose gradient it used)."""
        import optax

        opt_state, nfev = state
        (value, terms), grad = jax.value_and_grad(self.fun, has_aux=True)(x, *args)
        updates, opt_state = self.tx.update(grad, opt_state, x)
        new_x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
        return Step(new_x, (opt_state, nfev + 1), x, value, terms, nfev + 1, jnp.asarray(True))


def make_optimizer(cfg: GatysConfig, fun) -> LBFGS | Adam:
    """The optimiser ``cfg.optimizer`` names, for the per-image loss ``fun(x, *args)``."""
    if cfg.optimizer == "lbfgs":
        return LBFGS(cfg, fun)
    if cfg.optimizer == "adam":
        return Adam(cfg, fun)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose lbfgs or adam")


def num_evaluations(state) -> jax.Array:
    """Function evaluations since the optimiser state was initialised."""
    return state.num_fun_eval if hasattr(state, "num_fun_eval") else state[1]
