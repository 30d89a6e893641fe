"""envpool's Atari games for the MIRL script: ids checked against envpool's registry, pools with the DeepMind
preprocessing (one per device, for that device's seeds), and their XLA step inside a sharded, compiled loop."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from common.devices import SEED_AXIS
from common.errors import UserError


class EnvStep(NamedTuple):
    """One envpool step, per seed and environment."""

    obs: jax.Array  # (stack, 84, 84) uint8, the newest frame last
    reward: jax.Array  # clipped in training pools
    terminated: jax.Array  # a lost life also terminates in training pools with --episodic-life
    truncated: jax.Array
    score: jax.Array  # the unclipped reward
    game_over: jax.Array  # the game is over (not just a life)
    elapsed: jax.Array  # agent steps into the game; 0 for a fresh reset


def atari_env_ids() -> list[str]:
    try:
        from envpool.registration import registry
    except ImportError as error:
        raise UserError('mirl_atari.py needs envpool: pip install -e ".[atari]"') from error
    return sorted(env_id for env_id, (module, *_) in registry.specs.items() if module == "envpool.atari")


def check_env_id(env_id: str) -> None:
    valid = atari_env_ids()
    if env_id not in valid:
        close = [v for v in valid if v.lower().startswith(env_id.lower()[:3])][:10] or valid[:10]
        raise UserError(f"{env_id!r} is not an envpool Atari game ({len(valid)} are, for example {', '.join(close)})")


def make_pool(args, env_seeds: list[int], training: bool):
    """An envpool of len(env_seeds) Atari environments with the DeepMind preprocessing: up to 30
    no-ops at reset, frame skip 4 with max-pooling, 84×84 gray, 4-frame stack, fire at reset. Training
    pools end an episode at a lost life and clip rewards (--episodic-life, --reward-clip); evaluation
    pools play whole games with true scores. envpool auto-resets on the step after a `done`."""
    import envpool

    return envpool.make(
        args.env_id,
        env_type="gymnasium",
        num_envs=len(env_seeds),
        batch_size=len(env_seeds),
        env_seed=env_seeds,
        episodic_life=args.episodic_life and training,
        reward_clip=args.reward_clip and training,
        noop_max=30,
        frame_skip=4,
        stack_num=4,
        img_height=84,
        img_width=84,
        gray_scale=True,
        use_fire_reset=True,
        repeat_action_probability=args.repeat_action_probability,
        max_episode_steps=args.max_episode_steps,
    )


def pool_seeds(seeds: list[int], envs_per_seed: int, offset: int = 0) -> list[int]:
    """Distinct environment seeds that depend only on the agent's seed, not on the other seeds in the pool."""
    return [offset + seed * envs_per_seed + index for seed in seeds for index in range(envs_per_seed)]


def sharded_env_step(pool_steps: list[Callable], mesh: jax.sharding.Mesh, envs_per_seed: int) -> Callable:
    """`(handles, actions (seeds, envs)) -> (handles, EnvStep (seeds, envs, ...))`, with one pool per
    device (`pool_steps[d]`, `handles[d]`). A pool cannot be vmapped, and envpool binds each XLA step
    function to its own pool (the handle array only orders the calls), so each device picks its pool's
    step by its index on the seed axis and steps it with its own seeds' actions."""

    def step_with(pool_step: Callable) -> Callable:
        def step(handle, actions):
            handle, (obs, reward, terminated, truncated, info) = pool_step(handle, actions.reshape(-1))
            result = EnvStep(
                obs,
                reward,
                terminated,
                truncated,
                info["reward"],
                info["terminated"].astype(jnp.bool_),
                info["elapsed_step"],
            )
            return handle, jax.tree.map(lambda x: x.reshape(-1, envs_per_seed, *x.shape[1:]), result)

        return step

    def step_local(handles, actions):
        device = jax.lax.axis_index(SEED_AXIS)
        handle, result = jax.lax.switch(device, [step_with(s) for s in pool_steps], handles[0], actions)
        return handle[None], result

    spec = PartitionSpec(SEED_AXIS)
    return jax.shard_map(step_local, mesh=mesh, in_specs=(spec, spec), out_specs=(spec, spec))


def open_pools(args, seeds: list[int], mesh: jax.sharding.Mesh, training: bool):
    """One pool per device for that device's seeds. Returns the pools, their step functions for jit,
    and their handles as a (devices, handle bytes) array with a row on each device."""
    per_seed = args.num_envs if training else args.eval_episodes
    per_device = len(seeds) // mesh.size
    offset = 0 if training else 1_000_000_007  # evaluation games differ from training games
    pools = [
        make_pool(args, pool_seeds(seeds[d * per_device : (d + 1) * per_device], per_seed, offset), training)
        for d in range(mesh.size)
    ]
    xla = [pool.xla() for pool in pools]
    handles = jax.device_put(np.stack([handle for handle, *_ in xla]), NamedSharding(mesh, PartitionSpec(SEED_AXIS)))
    return pools, [step for *_, step in xla], handles


def reset_pools(pools, num_seeds: int) -> np.ndarray:
    """Reset every pool; the first observations per seed, (seeds, envs per seed, stack, 84, 84)."""
    obs = np.concatenate([pool.reset()[0] for pool in pools])
    return obs.reshape(num_seeds, -1, *obs.shape[1:])
