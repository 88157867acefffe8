import os
from pathlib import Path

import torch

# Tests run on few cores next to other work: keep torch to one thread.
torch.set_num_threads(1)

_REPO_DATA = Path(__file__).resolve().parents[1] / ".data"
if "DOUBLEBACKPROP_DATA" not in os.environ and _REPO_DATA.is_dir():
    os.environ["DOUBLEBACKPROP_DATA"] = str(_REPO_DATA)
