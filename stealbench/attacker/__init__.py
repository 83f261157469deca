"""The attacker's side. Runs in its own process, started by ``stealbench.attacker.launch``: it holds the pool
images, a handle to the oracle (requests over a :class:`~stealbench.transport.Channel`), a surrogate factory and
the trainer, and nothing of the defender's (victim, defense, evaluation set, the pool's ground truth)."""
