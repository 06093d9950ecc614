"""Run health (docs/health.md): the learning-signal ledger (:mod:`.ledger`), the reward-signal guard
(:mod:`.guard`), verified weight pushes (:mod:`.verify`), the trainer's hook (:mod:`.run`) and
``dapo doctor`` (:mod:`.doctor`)."""
