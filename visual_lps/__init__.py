"""visual-lps: Latent Policy Steering (LPS) for offline RL from states and pixels, in PyTorch."""

import os
import warnings

# MuJoCo renders headless through EGL unless the user chose otherwise (osmesa, glfw); it must be set
# before mujoco is first imported, and spawned worker processes inherit it.
os.environ.setdefault("MUJOCO_GL", "egl")

# The CUDA build of torch ships triton, whose bundled LLVM segfaults when it is imported after Mesa's EGL
# driver has loaded its own LLVM (as `import mujoco` does with MUJOCO_GL=egl). Loading triton first avoids it.
try:
    import triton  # noqa: F401
except ImportError:
    pass

# Noise from inside libraries, on every run: torch's forward-mode AD (the MeanFlow JVP) scripts its own
# decompositions with the deprecated torch.jit.script, and gymnasium warns about ogbench's float64 bounds.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32", category=UserWarning)

__version__ = "0.1.0"
