"""dapo-rl: DAPO reinforcement learning for language models.

See ``dapo_rl.trainer`` for the training loop and ``dapo_rl.algorithm`` for the pure tensor
functions that implement the paper's four techniques.
"""

__version__ = "0.1.0"
