"""unlearn: machine unlearning for PyTorch image classifiers.

Train while recording layer-wise pruned updates, then honour deletion requests
by subtracting the updates of the steps that saw the deleted samples.
"""

__version__ = "0.1.0"
