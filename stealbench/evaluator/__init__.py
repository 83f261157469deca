"""The surrogate's evaluator: its own process, holding the evaluation images and nothing else.

The surrogate's architecture may come from a plugin, and its code runs when the net is built and called: it must
not run beside the victim. The defender sends this process the evaluation images once and each checkpoint's
weights; it builds the net, loads them and sends back the softmax outputs. No victim, no labels, no pool truth
exist here; accuracy and fidelity are computed on the defender's side from the outputs (see client.py).
"""
