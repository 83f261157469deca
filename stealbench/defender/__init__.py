"""The defender's side. Runs in the main process: data, victim, defense, the oracle that answers queries, and the
referee that evaluates the surrogates the attacker's process sends over. Nothing here is importable state of the
attacker's process (see ``stealbench.attacker``)."""
