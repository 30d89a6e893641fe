"""A hand-written swing-up controller for gymnasium's Pendulum-v1: the "expert" behaviour policy for
small offline datasets made without network (`python -m common.make_dataset --policy
benchmarks.pendulum_controller:act ...`).

Pendulum-v1 (θ = 0 upright, observation [cos θ, sin θ, θ̇], torque u in the env's own box [-2, 2])
steps θ̇ ← θ̇ + (15 sin θ + 3u)·0.05, θ ← θ + θ̇·0.05. Far from the top the controller pumps energy
E = ½θ̇² + 15(cos θ − 1) (0 when balanced upright, −30 hanging at rest; dE/dt = 3uθ̇) with full torque
in the direction of motion until E reaches 0; near the top a PD law holds the pendulum upright.
`act` returns actions in the env's own box [-2, 2], not [-1, 1].

Measured: mean return −137.4 over 20 episodes (seeds 0..19; the uniform random policy scores about
−1200), with `python -m benchmarks.pendulum_controller`.
"""

import numpy as np

MAX_TORQUE = 2.0
# Near the top (|θ| < BALANCE_ANGLE) the PD law can hold the pendulum: gravity's pull 15·sin θ there is
# well within what the torque (3·2 = 6 rad/s²) can overcome once the swing has brought it up slowly.
BALANCE_ANGLE = 0.6
KP, KD = 12.0, 2.5


def act(obs: np.ndarray) -> np.ndarray:
    """Observations [n, 3] → torques [n, 1] in [-2, 2], deterministic."""
    cos_theta, sin_theta, theta_dot = obs[:, 0], obs[:, 1], obs[:, 2]
    theta = np.arctan2(sin_theta, cos_theta)
    energy = 0.5 * theta_dot**2 + 15.0 * (cos_theta - 1.0)

    # pump energy while below the upright energy, brake when above; a pendulum at rest gets a push
    direction = np.where(theta_dot >= 0.0, 1.0, -1.0)
    swing = MAX_TORQUE * direction * np.sign(-energy)
    balance = -(KP * theta + KD * theta_dot)
    torque = np.where(np.abs(theta) < BALANCE_ANGLE, balance, swing)
    return np.clip(torque, -MAX_TORQUE, MAX_TORQUE)[:, None].astype(np.float32)


def mean_return(num_episodes: int = 20) -> float:
    """Mean undiscounted return of `act` over `num_episodes` episodes, seeded 0..num_episodes-1."""
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")] * num_episodes)
    obs, _ = envs.reset(seed=0)  # env j gets seed j
    returns = np.zeros(num_episodes)
    done = np.zeros(num_episodes, dtype=bool)
    while not done.all():  # all episodes last 200 steps, so they end together
        obs, reward, terminated, truncated, _ = envs.step(act(obs))
        returns += np.where(done, 0.0, reward)
        done |= terminated | truncated
    envs.close()
    return float(returns.mean())


if __name__ == "__main__":
    print(f"Pendulum-v1, energy-shaping swing-up + PD: mean return over 20 episodes {mean_return(20):.1f}")
