"""The redundancy study: does MIRL's learned prior pay off when actions are redundant?

Each environment gets K more actions, exact copies of one of its own (mirl_gymnax.py --redundant-actions K): the
no-op where the game has one (Acrobot, MinAtar), CartPole's "push left" where it has none. A uniform prior (sql)
spreads K/(|A|+K) of its exploration, and of the weight in its soft value, over the copies, and dqn's ε-greedy
explores uniformly over all |A|+K; a learned marginal prior (mirl) can move its mass off them.

    python benchmarks/redundancy_study.py     # this CPU's budget: 500k steps per seed, 10 seeds (5 on MinAtar)
    python benchmarks/redundancy_study.py --steps 5000000 --num-seeds 20 --minatar-seeds 10 --minatar-copies 0 6 24 60

Every part is a mirl_gymnax.py run in this process with checkpoints, so that the same command continues an
interrupted study (benchmarks/studies.py). Runs go to runs/{env}__{algo}-K{K}__{seed}__{time}. Per environment,
method and K it prints the final greedy score's IQM over seeds with its 95% bootstrap interval and the number of
seeds, and ρ's mass on the copies at the end (mean ± std over seeds); {out}_study.png draws the scores against K
and ρ's mass over training.
"""

from dataclasses import dataclass, field
from pathlib import Path

import minatar_study
import numpy as np
import studies
import tyro

# the flags of the documented gymnax results (docs/results.md) and, on MinAtar, the MinAtar study's
ENV_FLAGS = {"Acrobot-v1": ["--beta-min", "10", "--beta-init", "10"]}
COPIED_ACTIONS = {"CartPole-v1": 0}  # no no-op: its copies push left
COPIES_TAG = "mirl/prior_on_copies"


@dataclass
class Args:
    envs: list[str] = field(default_factory=lambda: ["CartPole-v1", "Acrobot-v1"])
    """classic-control environments"""
    copies: list[int] = field(default_factory=lambda: [0, 3, 15, 63])
    """values of K on --envs"""
    num_seeds: int = 10
    """seeds per (environment, method, K) on --envs, vmapped"""
    minatar_games: list[str] = field(default_factory=lambda: ["Breakout-MinAtar"])
    """MinAtar games, with their minimal action sets"""
    minatar_copies: list[int] = field(default_factory=lambda: [0, 6, 24])
    """values of K on --minatar-games"""
    minatar_seeds: int = 5
    """seeds per (game, method, K)"""
    algos: list[str] = field(default_factory=lambda: ["dqn", "sql", "mirl"])
    """methods"""
    steps: int = 500_000
    """environment steps per seed"""
    checkpoint_interval: int = 100_000
    """environment steps between checkpoints (and so the most an interruption loses)"""
    flags: list[str] = field(default_factory=list)
    """mirl_gymnax.py flags added to every run (after the environment's own)"""
    out: Path = Path("docs/redundancy")
    """prefix of the figures"""
    reps: int = 2000
    """bootstrap resamples per interval"""


def run_flags(args: Args, env_id: str, algo: str, copies: int) -> list[str]:
    """The mirl_gymnax.py flags of one part of the study."""
    minatar = env_id in args.minatar_games
    env_flags = minatar_study.game_flags(minatar_study.Args(steps=args.steps))
    return [
        *("--env-id", env_id, "--algo", algo, "--exp-name", f"{algo}-K{copies}", "--redundant-actions", str(copies)),
        *("--num-seeds", str(args.minatar_seeds if minatar else args.num_seeds), "--total-timesteps", str(args.steps)),
        *("--save-model", "--checkpoint-interval", str(args.checkpoint_interval)),
        *(env_flags if minatar else ENV_FLAGS.get(env_id, [])),
        *(["--copied-action", str(COPIED_ACTIONS[env_id])] if copies and env_id in COPIED_ACTIONS else []),
        *args.flags,
    ]  # fmt: skip


def parts(args: Args) -> list[tuple[str, str, int]]:
    """(environment, method, K) of every run of the study."""
    plan = [(env, copies) for env in args.envs for copies in args.copies]
    plan += [(game, copies) for game in args.minatar_games for copies in args.minatar_copies]
    return [(env, algo, copies) for env, copies in plan for algo in args.algos]


def main(args: Args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.aggregate import read_runs

    run_dirs = {part: studies.run_or_continue(part[0], f"{part[1]}-K{part[2]}", run_flags(args, *part), args.steps)
                for part in parts(args)}  # fmt: skip
    envs = list(dict.fromkeys(env for env, _, _ in run_dirs))
    # seeds counted once, and runs of one experiment with one set of flags (common.aggregate's reader)
    runs = read_runs(list(run_dirs.values()), COPIES_TAG, "eval/episodic_return", 1)
    finals, mass_curves = runs.finals, runs.curves  # each seed's final score, and ρ's mass on the copies
    results = {"scores": {}, "prior_on_copies": {}}
    figure, axes = plt.subplots(2, len(envs), figsize=(4.4 * len(envs), 7.2), squeeze=False)
    header = " | ".join(f"{algo}: IQM [95% CI]" for algo in args.algos)
    print(f"\n| environment | K | seeds | {header} | ρ's mass on the copies at the end |")
    print("|-" * (len(args.algos) + 4) + "|")
    for column, env in enumerate(envs):
        copies = sorted({k for e, _, k in run_dirs if e == env})
        for algo in args.algos:
            cells = [studies.iqm_interval(finals[(env, f"{algo}-K{k}")], args.reps) for k in copies]
            results["scores"].update({(env, algo, k): cell for k, cell in zip(copies, cells, strict=True)})
            point, low, high = np.asarray(cells).T
            axes[0, column].errorbar(copies, point, yerr=[point - low, high - point], marker="o", capsize=3, label=algo)
        for index, k in enumerate(copies):
            mass = {algo: mass_curves[(env, f"{algo}-K{k}")] for algo in args.algos if algo != "dqn" and k > 0}
            ends = {algo: np.asarray([values[-1] for _, values in seeds]) for algo, seeds in mass.items()}
            results["prior_on_copies"].update({(env, algo, k): end for algo, end in ends.items()})
            cells = [results["scores"][(env, algo, k)] for algo in args.algos]
            scores = " | ".join(f"{p:.1f} [{lo:.1f}, {hi:.1f}]" for p, lo, hi in cells)
            seeds = "/".join(sorted({str(len(finals[(env, f"{algo}-K{k}")])) for algo in args.algos}))
            on_copies = ", ".join(f"{algo} {end.mean():.3f} ± {end.std():.3f}" for algo, end in ends.items())
            print(f"| {env} | {k} | {seeds} | {scores} | {on_copies or '-'} |")
            for algo, seeds in mass.items():
                steps, values = seeds[0][0], np.mean([v for _, v in seeds], axis=0)
                style = "-" if algo == "mirl" else ":"  # one colour per K
                axes[1, column].plot(steps, values, style, color=f"C{index}", label=f"{algo}, K={k}")
        axes[0, column].set(title=env, xlabel="K (copies of one action)", ylabel="final greedy return (IQM, 95% CI)")
        axes[0, column].set_xscale("symlog", linthresh=1)
        axes[1, column].set(xlabel="environment steps", ylabel="ρ's mass on the copies (mean over seeds)")
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    figure.tight_layout()
    studies.save_figure(figure, f"{args.out}_study.png")
    return results


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(tyro.cli(Args))
