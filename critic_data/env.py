"""`critic-data env`: the versions that matter in a bug report, read without importing the heavy packages
(only torch is imported, to ask it about CUDA)."""

from __future__ import annotations

import platform
import sys

from critic_data import package_version

PACKAGES = ("critic-data", "transformers", "trl", "accelerate", "datasets", "huggingface_hub", "vllm",
            "deepspeed", "peft", "flash-attn")


def environment() -> dict[str, str]:
    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
            info["CUDA"] = f"{torch.version.cuda}, {torch.cuda.device_count()} GPU(s): {', '.join(names)}"
        else:
            info["CUDA"] = f"not available (torch built for CUDA {torch.version.cuda})" if torch.version.cuda \
                else "not available (CPU build of torch)"
    except ImportError:
        info["torch"] = "not installed"
    info.update({package: package_version(package) for package in PACKAGES})
    return info
