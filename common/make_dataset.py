"""Write an offline dataset without network: roll out a behaviour policy in a gymnasium environment and
save whole episodes, back to back, as a D4RL-format HDF5 file (optionally also as a local Minari dataset).

    python -m common.make_dataset --env-id Pendulum-v1 --policy random --num-steps 100000 \\
        --output data/pendulum-random.hdf5 --seed 0
    python -m common.make_dataset --env-id Pendulum-v1 --policy benchmarks.pendulum_controller:act \\
        --noise-std 0.2 --random-fraction 0.3 --output data/pendulum-mixed.hdf5

The file has `observations, actions, rewards, terminals, timeouts, next_observations`: an episode cut by
the time limit ends with `timeouts` true, one that ended for good with `terminals` true, and the final
episode may be a partial one (both false). Its root attributes `env_id, ref_min_score, ref_max_score`
make it loadable and scorable by `common.datasets.load_dataset(name, dataset_path=...)`.

Actions are in the environment's own action box throughout: the random policy is uniform over it, a
policy callable must return actions in it, and `--noise-std` is measured in half-widths of it.
"""

import dataclasses
import importlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np

from common.cli import run_script
from common.errors import UserError

Policy = Callable[[np.ndarray], np.ndarray]  # observations [n, obs_dim] -> actions [n, act_dim], deterministic


@dataclasses.dataclass
class Args:
    env_id: str = "Pendulum-v1"
    """gymnasium environment id to collect the data in"""
    policy: str = "random"
    """behaviour policy: `random` (uniform over the action box), or `module:function`, any importable callable
    numpy observations [n, obs_dim] -> actions [n, act_dim] in the env's action box (e.g.
    benchmarks.pendulum_controller:act)"""
    policy_checkpoint: str | None = None
    """a saved run to act with: --policy then names its loader, called with this path to make the policy
    (e.g. --policy misa_d4rl:load_policy --policy-checkpoint runs/<run>/checkpoints/step_001200000.eqx)"""
    num_steps: int = 100_000
    """rows to write (the last episode is cut to fit)"""
    output: str = "data/dataset.hdf5"
    """the D4RL-format HDF5 file to write (replaced if it exists)"""
    seed: int = 0
    """seeds the environments, the random actions, the noise and which episodes are random"""
    noise_std: float = 0.0
    """standard deviation of the Gaussian noise added to the policy's actions, in half-widths of the action box;
    noisy actions are clipped to the box"""
    random_fraction: float = 0.0
    """probability that an episode is played by the uniform random policy instead (a "mixed" dataset)"""
    num_envs: int = 8
    """environments stepped together (a gymnasium sync vector env)"""
    reference_episodes: int = 10
    """episodes averaged for the reference returns"""
    ref_max_score: float | None = None
    """the reference (expert) return; default: the mean return of the noiseless behaviour policy (none for
    `--policy random`)"""
    minari_id: str | None = None
    """also write the episodes as a local Minari dataset with this id (e.g. pendulum/random-v0)"""


@dataclasses.dataclass
class Episode:
    observations: list[np.ndarray]  # one more than actions: the last follows the final step
    actions: list[np.ndarray] = dataclasses.field(default_factory=list)
    rewards: list[float] = dataclasses.field(default_factory=list)
    terminated: bool = False  # the final step ended the episode for good
    truncated: bool = False  # the final step hit the time limit

    def __len__(self) -> int:
        return len(self.actions)

    def first_steps(self, num_steps: int) -> "Episode":
        """The first `num_steps` steps; shorter than the episode, it is a partial one (neither flag set)."""
        if num_steps >= len(self):
            return self
        return Episode(self.observations[: num_steps + 1], self.actions[:num_steps], self.rewards[:num_steps])


def load_policy(spec: str, checkpoint: str | None = None) -> Policy | None:
    """The behaviour policy named by --policy (None means uniform random); with a checkpoint, --policy names
    a loader that makes the policy from that file."""
    if spec == "random":
        if checkpoint is not None:
            raise UserError("--policy-checkpoint needs --policy to name its loader, e.g. misa_d4rl:load_policy")
        return None
    if spec.startswith("checkpoint:"):
        raise UserError(
            f"--policy {spec!r}: a saved run is now given as --policy misa_d4rl:load_policy --policy-checkpoint PATH"
        )
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise UserError(f"--policy {spec!r}: expected `random` or `module:function`")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise UserError(f"--policy {spec!r}: {error}") from error
    return function if checkpoint is None else function(checkpoint)


def make_envs(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    # same-step autoreset: a step that ends an episode returns the next episode's first observation and
    # keeps the true final observation in info["final_obs"], so every step yields a whole transition
    return gym.vector.SyncVectorEnv(
        [lambda: gym.wrappers.FlattenObservation(gym.make(env_id))] * num_envs,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


class Behaviour:
    """The policy's actions plus noise, or uniform random ones for the episodes drawn to be random."""

    def __init__(self, policy: Policy | None, action_space: gym.spaces.Box, noise_std: float, rng: np.random.Generator):
        if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
            raise UserError(f"the action space {action_space} is unbounded: a uniform random policy needs a box")
        self.policy, self.low, self.high = policy, action_space.low, action_space.high
        self.noise_std, self.rng = noise_std, rng

    def __call__(self, obs: np.ndarray, random_episode: np.ndarray) -> np.ndarray:
        uniform = self.rng.uniform(self.low, self.high, size=(len(obs), *self.low.shape))
        if self.policy is None:
            return uniform.astype(np.float32)
        actions = np.asarray(self.policy(obs), dtype=np.float64).reshape(uniform.shape)
        half_width = (self.high - self.low) / 2
        actions = np.clip(
            actions + self.noise_std * half_width * self.rng.standard_normal(actions.shape), self.low, self.high
        )
        return np.where(random_episode[:, None], uniform, actions).astype(np.float32)


def collect(args: Args, policy: Policy | None) -> list[Episode]:
    """Whole episodes, in the order they finish, totalling `args.num_steps` steps; the last one is cut to fit,
    or, if none finishes in time, the longest running one is kept as a partial episode."""
    rng = np.random.default_rng(args.seed)
    envs = make_envs(args.env_id, args.num_envs)
    behaviour = Behaviour(policy, envs.single_action_space, args.noise_std, rng)
    obs, _ = envs.reset(seed=args.seed)
    running = [Episode([o]) for o in obs]
    random_episode = rng.random(args.num_envs) < args.random_fraction
    finished: list[Episode] = []
    finished_steps = 0
    while finished_steps + max(len(episode) for episode in running) < args.num_steps:
        actions = behaviour(obs, random_episode)
        obs, rewards, terminated, truncated, info = envs.step(actions)
        for j, episode in enumerate(running):
            episode.actions.append(actions[j])
            episode.rewards.append(float(rewards[j]))
            if terminated[j] or truncated[j]:
                episode.observations.append(info["final_obs"][j])
                episode.terminated, episode.truncated = bool(terminated[j]), bool(truncated[j])
                finished.append(episode)
                finished_steps += len(episode)
                running[j] = Episode([obs[j]])
                random_episode[j] = rng.random() < args.random_fraction
            else:
                episode.observations.append(obs[j])
    envs.close()
    if finished_steps < args.num_steps:
        finished.append(max(running, key=len))
    kept, total = [], 0
    for episode in finished:
        if total >= args.num_steps:
            break
        kept.append(episode.first_steps(args.num_steps - total))
        total += len(kept[-1])
    return kept


def mean_return(env_id: str, policy: Policy | None, num_episodes: int, seed: int) -> float:
    """Mean return of the noiseless policy (uniform random if None) over one episode in each of
    `num_episodes` environments, so that short episodes are not over-counted."""
    envs = make_envs(env_id, num_episodes)
    behaviour = Behaviour(policy, envs.single_action_space, 0.0, np.random.default_rng(seed))
    obs, _ = envs.reset(seed=seed)
    returns = np.zeros(num_episodes)
    done = np.zeros(num_episodes, dtype=bool)
    while not done.all():
        obs, rewards, terminated, truncated, _ = envs.step(behaviour(obs, np.zeros(num_episodes, dtype=bool)))
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    envs.close()
    return float(returns.mean())


def last_step_flags(episodes: list[Episode], flag: Callable[[Episode], bool]) -> np.ndarray:
    """One bool per step: `flag(episode)` on each episode's last step, False elsewhere."""
    flags = [np.zeros(len(episode), dtype=bool) for episode in episodes]
    for episode, episode_flags in zip(episodes, flags, strict=True):
        episode_flags[-1] = flag(episode)
    return np.concatenate(flags)


def d4rl_arrays(episodes: list[Episode]) -> dict[str, np.ndarray]:
    return {
        "observations": np.concatenate([np.stack(e.observations[:-1]) for e in episodes]).astype(np.float32),
        "actions": np.concatenate([np.stack(e.actions) for e in episodes]).astype(np.float32),
        "rewards": np.concatenate([np.asarray(e.rewards) for e in episodes]).astype(np.float32),
        "terminals": last_step_flags(episodes, lambda e: e.terminated),
        # a step that both terminates and hits the time limit is stored as a terminal only: d4rl's reading
        # drops timeout rows, and this transition's target must not bootstrap
        "timeouts": last_step_flags(episodes, lambda e: e.truncated and not e.terminated),
        "next_observations": np.concatenate([np.stack(e.observations[1:]) for e in episodes]).astype(np.float32),
    }


def write_hdf5(path: Path, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with h5py.File(partial, "w") as file:
        for key, array in arrays.items():
            file.create_dataset(key, data=array)
        file.attrs.update({key: value for key, value in attrs.items() if value is not None})
    os.replace(partial, path)  # a killed run leaves no half-written file at `path`


def write_minari(args: Args, episodes: list[Episode], ref_min_score: float, ref_max_score: float | None) -> None:
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [
        EpisodeBuffer(
            observations=np.stack(e.observations),
            actions=np.stack(e.actions),
            rewards=list(e.rewards),
            terminations=[False] * (len(e) - 1) + [e.terminated],
            truncations=[False] * (len(e) - 1) + [e.truncated],
        )
        for e in episodes
    ]
    spaces_env = make_envs(args.env_id, 1)  # the flattened observation space the data has
    with warnings.catch_warnings():  # minari warns about each missing author/permalink field
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id=args.minari_id,
            buffer=buffers,
            env=args.env_id,
            eval_env=args.env_id,
            observation_space=spaces_env.single_observation_space,
            action_space=spaces_env.single_action_space,
            algorithm_name=args.policy,
            description=f"common.make_dataset: policy {args.policy}, noise_std {args.noise_std}, "
            f"random_fraction {args.random_fraction}, seed {args.seed}",
            # minari stores reference returns only when it has a maximum
            ref_min_score=ref_min_score if ref_max_score is not None else None,
            ref_max_score=ref_max_score,
        )
    spaces_env.close()


def main(args: Args) -> None:
    if args.num_steps < 2 or args.num_envs < 1 or args.reference_episodes < 1:
        raise UserError("--num-steps must be at least 2, --num-envs and --reference-episodes at least 1")
    if not 0.0 <= args.random_fraction <= 1.0 or args.noise_std < 0.0:
        raise UserError("--random-fraction must lie in [0, 1] and --noise-std be non-negative")
    if args.minari_id is not None:
        import minari

        if args.minari_id in minari.list_local_datasets():
            raise UserError(f"a local Minari dataset {args.minari_id} exists already (minari delete {args.minari_id})")

    policy = load_policy(args.policy, args.policy_checkpoint)
    episodes = collect(args, policy)

    # reference rollouts use other seeds than the data
    ref_min_score = mean_return(args.env_id, None, args.reference_episodes, args.seed + 1_000_000)
    ref_max_score = args.ref_max_score
    if ref_max_score is None and policy is not None:
        ref_max_score = mean_return(args.env_id, policy, args.reference_episodes, args.seed + 2_000_000)

    attrs = {
        "env_id": args.env_id,
        "ref_min_score": ref_min_score,
        "ref_max_score": ref_max_score,
        "policy": args.policy,
        "noise_std": args.noise_std,
        "random_fraction": args.random_fraction,
        "seed": args.seed,
    }
    arrays = d4rl_arrays(episodes)
    write_hdf5(Path(args.output), arrays, attrs)
    if args.minari_id is not None:
        write_minari(args, episodes, ref_min_score, ref_max_score)

    whole = [e for e in episodes if e.terminated or e.truncated] or episodes
    ref_max_text = "none" if ref_max_score is None else f"{ref_max_score:.1f}"
    print(
        f"{args.output}: {len(arrays['rewards'])} rows, {len(episodes)} episodes, mean episode return "
        f"{np.mean([sum(e.rewards) for e in whole]):.1f} ({len(whole)} whole episodes), "
        f"ref_min_score {ref_min_score:.1f}, ref_max_score {ref_max_text}"
        + (f", Minari dataset {args.minari_id}" if args.minari_id else "")
    )


if __name__ == "__main__":
    run_script(main, Args, "common.make_dataset")
