"""Which optional extra brings which package: the core installs what curvature, GD training, sweeps and the
run store need; a study's own packages come with its extra and are imported where they are used."""

from __future__ import annotations

EXTRA_OF = {
    **dict.fromkeys(("transformers", "tokenizers", "huggingface_hub", "emoji", "babel", "ruptures", "py3langid"),
                    "lm"),
    "cvxpy": "theory",
    "accelerate": "hf",
    "lightning": "lightning",
    "ray": "ray",
    "datasets": "datasets",
}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """One line naming the extra that brings the missing package, or None for a package no extra brings."""
    package = (error.name or "").split(".")[0]
    extra = EXTRA_OF.get(package)
    if extra is None:
        return None
    study = extra in ("lm", "theory")  # both come with the repository's default set-up
    here = "bash scripts/setup.sh" if study else f"PHASESCOPE_EXTRAS=study,{extra} bash scripts/setup.sh"
    return (f"{package} is not installed: this needs phasescope's {extra!r} extra: pip install 'phasescope[{extra}]' "
            f"(in this repository: {here})")
