"""Rendering: a top-down pygame view of any road, rollouts to MP4/GIF.

Nothing here imports pygame at import time; the :class:`Renderer` loads it on first use (with
``SDL_VIDEODRIVER=dummy`` when no display is present), so ``import difftraffic.render`` is cheap
and works on headless machines.

Example::

    from difftraffic.render import record_rollout
    record_rollout(my_scenario(), "rollout.mp4", steps=300)
"""

from difftraffic.render.camera import Camera
from difftraffic.render.recording import record_rollout, record_states
from difftraffic.render.renderer import RenderConfig, Renderer
from difftraffic.render.video import write_video

__all__ = ["Camera", "RenderConfig", "Renderer", "record_rollout", "record_states", "write_video"]
