"""The MinAtar study: mirl, sql and dqn on the five MinAtar games, with each game's minimal action set and, on
some games, the full set of 6 actions; then the IQM table and figures over games (common.aggregate).

    python benchmarks/minatar_study.py                       # the standard budget: 5M steps per seed, 10 seeds (GPU)
    python benchmarks/minatar_study.py --steps 500000 --num-seeds 5 --full-action-games Breakout-MinAtar Asterix-MinAtar

Every run is a `mirl_gymnax.py` run (in this process, one after another) with the flags below, fixed for all
games and algorithms, and checkpoints every --checkpoint-interval steps. Running the same command again
continues the study: runs that finished are skipped, and an interrupted run resumes from its last checkpoint
(runs made with other flags, another budget or other seeds, are left alone).
Runs go to runs/{game}__{algo}__{seed}__{time} (the full action set's as {algo}-full); the aggregates to
{out}_minimal_* and {out}_full_*, and the tables are printed.
"""

from dataclasses import dataclass, field
from pathlib import Path

import studies
import tyro

GAMES = ["Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar"]


@dataclass
class Args:
    games: list[str] = field(default_factory=lambda: list(GAMES))
    """games with their minimal action sets"""
    full_action_games: list[str] = field(default_factory=lambda: list(GAMES))
    """games also run with the full action set"""
    algos: list[str] = field(default_factory=lambda: ["dqn", "sql", "mirl"])
    """algorithms"""
    steps: int = 5_000_000
    """environment steps per seed (Young & Tian's 5M frames: MinAtar has no frame skip)"""
    num_seeds: int = 10
    """seeds per (game, algorithm, action set), vmapped"""
    checkpoint_interval: int = 100_000
    """environment steps between checkpoints (and so the most an interruption loses)"""
    flags: list[str] = field(
        default_factory=lambda: [
            # Young & Tian (2019): a replay of 100k transitions, a target copy every 1000 steps, ε from 1 to
            # its end value over the first 100k steps (see exploration_fraction below); the kit's defaults else
            "--buffer-size", "100000", "--target-network-frequency", "1000",
            # α_ρ and α_β from the sweep on Breakout-MinAtar (docs/results.md, MinAtar study)
            "--alpha-rho", "1e-5", "--alpha-beta", "2e-5",
        ]
    )  # fmt: skip
    """mirl_gymnax.py flags shared by every run"""
    exploration_steps: int = 100_000
    """environment steps over which ε decays (sets --exploration-fraction)"""
    out: Path = Path("docs/minatar")
    """prefix of the aggregate figures"""
    final_last: int = 1
    """a seed's score: the mean of the last this many evaluations (common.aggregate)"""


def experiment_name(algo: str, full: bool) -> str:
    return f"{algo}-full" if full else algo


def game_flags(args: Args) -> list[str]:
    """The flags every game and algorithm of the study shares (the other MinAtar studies train with them too)."""
    return ["--exploration-fraction", str(min(1.0, args.exploration_steps / args.steps)), *args.flags]


def run_flags(args: Args, game: str, algo: str, full: bool) -> list[str]:
    """The mirl_gymnax.py flags of one part of the study."""
    return [
        *("--env-id", game, "--algo", algo, "--exp-name", experiment_name(algo, full)),
        *("--num-seeds", str(args.num_seeds), "--total-timesteps", str(args.steps)),
        *("--save-model", "--checkpoint-interval", str(args.checkpoint_interval)),
        *(["--full-action-set"] if full else []),
        *game_flags(args),
    ]  # fmt: skip


def run_or_continue(args: Args, game: str, algo: str, full: bool) -> Path:
    """The run directory of this part of the study (studies.run_or_continue)."""
    return studies.run_or_continue(game, experiment_name(algo, full), run_flags(args, game, algo, full), args.steps)


def main(args: Args) -> dict:
    from common import aggregate

    results = {}
    for action_set, games in (("minimal", args.games), ("full", args.full_action_games)):
        runs = [run_or_continue(args, game, algo, action_set == "full") for game in games for algo in args.algos]
        if runs:
            out = args.out.with_name(f"{args.out.name}_{action_set}")
            print(f"\n{action_set} action sets:")
            results[action_set] = aggregate.main(aggregate.Args(runs=runs, out=out, final_last=args.final_last))
    return results


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(tyro.cli(Args))
