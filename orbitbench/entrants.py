"""What a benchmark compares: a model trained by a method. One id for it, used by the run's name,
TensorBoard's trials, sweep cells and results, and leaderboard entries (torch-free: the sweep and
leaderboard commands import it without the training stack)."""

from __future__ import annotations

DEFAULT_METHOD = "supervised"  # plain cross-entropy on the labels (orbitbench.methods.supervised)


def entrant_id(model: str, method: str | None = DEFAULT_METHOD, sep: str = "+") -> str:
    """`paper_mlp`, `paper_mlp+pose_consistency`: the model, with its method unless it is the default.

    The default method adds nothing, so ids from before methods existed stay valid. `sep="__"` is
    the spelling in leaderboard entry file names.
    """
    method = method or DEFAULT_METHOD
    return model if method == DEFAULT_METHOD else f"{model}{sep}{method}"
