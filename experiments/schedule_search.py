"""python -m experiments.schedule_search [--out DIR] [--smoke]   (30 minutes a pair on 2 CPU cores)

--smoke (64 px, 4 iterations, a 32 -> 64 px schedule): about 30 s.
At the defaults (512 px, 500 iterations, two candidates) a pair took 29 minutes on 2 CPU cores,
the default schedule 15 of them (measured, JAX 0.10.2).

Issue 13 item 4: is there a schedule that reaches the same or a lower final loss than
``stylize``'s default (``--iterations`` at ``--size``, one scale) in at most half its wall
time? Each pair runs the default, then each candidate schedule, one after another (run it on an
otherwise idle machine: the answer is a ratio of wall times). A candidate is a list of
``SIZE:ITERATIONS`` steps, coarse to fine, each starting from the previous one's result
enlarged (what ``--scales`` does, with its own iteration count per scale), and optionally
``@HISTORY``, its L-BFGS history size; its last size is ``--size``, so its final loss is
evaluated at that size with the same targets as the default's.

Wall time is the whole ``stylize`` call of every step (targets, compiling, iterations); the
compile time is shown beside it (with the persistent compilation cache warm, near 0). The
default's own loss at half its wall time (from its trace, recorded every ``--trace-every``
iterations) is shown too: the bar any cheaper schedule has to beat by more than stopping early.

Writes ``results.csv`` (one row per pair and schedule), ``trace.csv`` (loss against time at
``--size``), ``results.json``, ``loss_curves.png``, ``sheet.png`` and ``summary.md``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

from experiments.lib import cli, inputs, outputs

NAME = "schedule_search"


class Schedule(NamedTuple):
    """Steps ``(size, iterations)``, coarse to fine, and the L-BFGS history size (None: the
    run's ``--history-size``)."""

    steps: tuple[tuple[int, int], ...]
    history: int | None = None

    @property
    def label(self) -> str:
        text = ",".join(f"{s}:{n}" for s, n in self.steps)
        return text if self.history is None else f"{text}@{self.history}"


def parse_schedule(text: str) -> Schedule:
    """``"256:300,512:200"`` -> ``((256, 300), (512, 200))``; ``"...@100"`` sets the history."""
    body, at, history = text.partition("@")
    if at and not (history.isdigit() and int(history) >= 1):
        raise ValueError(f"schedule {text!r}: @HISTORY must be a whole number >= 1")
    steps = []
    for part in body.split(","):
        size, sep, n = part.strip().partition(":")
        if not sep or not size.isdigit() or not n.isdigit() or int(n) < 1 or int(size) < 32:
            raise ValueError(f"schedule {text!r}: each step is SIZE:ITERATIONS (>= 32 px, >= 1)")
        steps.append((int(size), int(n)))
    if [s for s, _ in steps] != sorted({s for s, _ in steps}):
        raise ValueError(f"schedule {text!r}: sizes must grow from step to step")
    return Schedule(tuple(steps), int(history) if at else None)


def run_schedule(net, cfg, content, style, schedule, trace_every: int) -> dict:
    """Runs ``schedule`` on one pair; its result, final loss at the last size, wall time and
    trace (seconds since the start, iteration, loss) over the last size's iterations."""
    from jaxstyle import gatys
    from jaxstyle import images as imlib

    trace: list[dict] = []
    start = time.perf_counter()
    image, compile_s, done, summary = None, 0.0, 0, {}
    if schedule.history is not None:
        cfg = dataclasses.replace(cfg, history_size=schedule.history)
    for k, (size, n) in enumerate(schedule.steps):
        last = k == len(schedule.steps) - 1

        def record(_i, it, losses, _img, last=last, done=done):
            if last:
                t = time.perf_counter() - start
                trace.append({"seconds": t, "iteration": done + it, "loss": losses["total"]})

        step_cfg = dataclasses.replace(
            cfg, size=size, scales=(), iterations=n, progress_every=min(cfg.progress_every, n)
        )
        res = gatys.stylize(
            [imlib.resize_long_side(content, size)],
            [style],
            net,
            step_cfg,
            progress=False,
            init_images=None if image is None else [image],
            callback=record,
            callback_every=min(trace_every, n),
        )
        image, summary = res.images[0], res.log["summary"]
        compile_s += summary["compile_seconds"]
        done += n
    return {
        "image": image,
        "final_loss": summary["total"],
        "wall_seconds": time.perf_counter() - start,
        "compile_seconds": compile_s,
        "trace": trace,
    }


def at_half_time(trace: list[dict], wall: float) -> dict | None:
    """The last trace point at or before half of ``wall`` seconds."""
    early = [p for p in trace if p["seconds"] <= wall / 2]
    return early[-1] if early else None


def main(argv: list[str] | None = None) -> dict:
    ap = cli.parser(__doc__, NAME)
    ap.add_argument(
        "--pairs",
        nargs="+",
        default=["tubingen:starry_night", "golden_gate:the_scream"],
        help="CONTENT:STYLE names in the image folders (or paths)",
    )
    ap.add_argument(
        "--schedules",
        nargs="+",
        default=["256:300,512:150", "128:300,256:200,512:150"],
        help="candidate schedules, each SIZE:ITERATIONS,... ending at --size, optionally "
        "@HISTORY (its L-BFGS history size)",
    )
    ap.add_argument("--trace-every", type=int, default=25, help="iterations between trace points")
    cli.gatys_flags(ap, ("size", "iterations", "history_size"), size=512, iterations=500)
    args = cli.parse(ap, argv)
    cli.smoke(args, ap, size=64, iterations=4, schedules=["32:4,64:2"], trace_every=2)
    try:
        candidates = [parse_schedule(s) for s in args.schedules]
    except ValueError as e:
        cli.fail(str(e))
    for c in candidates:
        if c.steps[-1][0] != args.size:
            cli.fail(f"schedule {c.label} ends at {c.steps[-1][0]} px, not --size {args.size}")
    pairs = []
    for p in args.pairs:
        c, sep, s = p.partition(":")
        if not sep or not c or not s:
            cli.fail(f"--pairs {p!r}: expected CONTENT:STYLE")
        pairs.append(
            (c, s, inputs.find_image(args, "content", c), inputs.find_image(args, "style", s))
        )

    from jaxstyle import images as imlib

    inputs.enable_compile_cache()
    out = outputs.Outputs(args.out, NAME, args)
    net = inputs.load_net(args)
    cfg = cli.gatys_config(args)
    default = Schedule(((args.size, args.iterations),))
    rows, traces, panels, sheet = [], [], [], []
    for c, s, c_path, s_path in pairs:
        content, style = imlib.load_image(c_path), imlib.load_image(s_path)
        pair = f"{c} x {s}"
        base = None
        series, shown = [], [(imlib.resize_long_side(content, args.size), pair)]
        for kind, sched in [("default", default)] + [("candidate", x) for x in candidates]:
            r = run_schedule(net, cfg, content, style, sched, args.trace_every)
            base = base or r
            row = {
                "pair": pair,
                "schedule": sched.label,
                "kind": kind,
                "final_loss": r["final_loss"],
                "wall_seconds": r["wall_seconds"],
                "compile_seconds": r["compile_seconds"],
                "loss_ratio": r["final_loss"] / base["final_loss"],
                "time_ratio": r["wall_seconds"] / base["wall_seconds"],
            }
            row["meets_target"] = kind == "candidate" and (
                row["loss_ratio"] <= 1.0 and row["time_ratio"] <= 0.5
            )
            rows.append(row)
            traces += [{"pair": pair, "schedule": sched.label, **p} for p in r["trace"]]
            series.append(
                {
                    "label": sched.label,
                    "x": [p["seconds"] for p in r["trace"]],
                    "y": [p["loss"] for p in r["trace"]],
                }
            )
            shown.append((r["image"], f"{sched.label}: x{row['loss_ratio']:.3g} loss"))
        half = at_half_time(base["trace"], base["wall_seconds"])
        if half is not None:
            rows.append(
                {
                    "pair": pair,
                    "schedule": f"{default.label}, stopped at iteration {half['iteration']}",
                    "kind": "default at half its time",
                    "final_loss": half["loss"],
                    "wall_seconds": half["seconds"],
                    "loss_ratio": half["loss"] / base["final_loss"],
                    "time_ratio": half["seconds"] / base["wall_seconds"],
                    "meets_target": False,
                }
            )
        panels.append({"title": f"{pair}: loss at {args.size} px", "series": series,
                       "xlabel": "seconds since the schedule started"})  # fmt: skip
        sheet.append(shown)
    out.csv("results.csv", rows)
    out.csv("trace.csv", traces)
    out.json("results.json", {"config": cfg, "results": rows, "trace": traces})
    out.plot("loss_curves.png", panels)
    out.sheet("sheet.png", sheet, f"schedules ending at {args.size} px")
    every = [
        c.label
        for c in candidates
        if all(
            r["meets_target"] for r in rows if r["kind"] == "candidate" and r["schedule"] == c.label
        )
    ]
    verdict = (
        f"Schedules meeting the target (the default's loss or lower in at most half its time) "
        f"on every pair: {', '.join(every)}."
        if every
        else "No candidate schedule met the target (the default's loss or lower in at most "
        "half its time) on every pair."
    )
    cols = ["pair", "schedule", "kind", "final_loss", "wall_seconds", "compile_seconds"]
    cols += ["loss_ratio", "time_ratio", "meets_target"]
    out.summary(
        f"Schedules against the default at {args.size} px", [verdict, outputs.md_table(rows, cols)]
    )
    print(f"wrote {out.dir}: {verdict}")
    return {"rows": rows, "verdict": verdict}


if __name__ == "__main__":
    main()
