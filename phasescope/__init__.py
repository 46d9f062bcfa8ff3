"""phasescope: the science of training dynamics, measured densely across checkpoints and learning rates.

The top-level names are imported on first use, so that ``phasescope --help`` and a script that only
needs one layer do not pay for torch and transformers up front.
"""

from importlib import import_module

from phasescope.errors import PhasescopeError

__version__ = "0.1.0"
# name -> "module" (the same name there) or "module:name"
_LAZY = {"hessian_trace": "phasescope.curvature", "most_negative_eigenvalue": "phasescope.curvature",
         "preconditioned_sharpness": "phasescope.curvature", "sharpness": "phasescope.curvature",
         "wlt_scores": "phasescope.measures.translation",
         "logit_lens": "phasescope.measures.logit_lens:prompt_logit_lens",
         "Recorder": "phasescope.integrations.recorder"}
__all__ = ["PhasescopeError", *sorted(_LAZY), "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        module, _, attribute = _LAZY[name].partition(":")
        value = getattr(import_module(module), attribute or name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'phasescope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
