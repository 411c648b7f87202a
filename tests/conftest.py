import os

import torch

# Triton kernels run on CPU tensors only under the interpreter. Set it before Triton is imported
# (gencore imports Triton lazily) and only where no GPU exists, so GPU runs use compiled kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
