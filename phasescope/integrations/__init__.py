"""Dense records of the user's own training: a :class:`Recorder` for a plain loop, and callbacks for the
Hugging Face ``Trainer`` (:mod:`phasescope.integrations.hf`) and Lightning
(:mod:`phasescope.integrations.lightning`) built on it. Their frameworks are optional extras
(``phasescope[hf]``, ``phasescope[lightning]``), imported only by those modules.
"""

from phasescope.integrations.recorder import Recorder, RecorderSchedule

__all__ = ["Recorder", "RecorderSchedule"]
