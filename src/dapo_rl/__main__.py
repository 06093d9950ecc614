"""``python -m dapo_rl ...`` (used with torchrun) is the same as the ``dapo`` command."""

from dapo_rl.cli import main

if __name__ == "__main__":
    main()
