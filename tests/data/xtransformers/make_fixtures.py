"""Write the x-transformers version fixtures used by tests/test_rotary_lm.py.

Run once per version, with that release unpacked on sys.path (the tests themselves only
need the files this writes)::

    pip download x-transformers==1.26.0 --no-deps -d build/xt/1.26.0 && unzip ...
    python tests/data/xtransformers/make_fixtures.py build/xt/1.26.0 1.26.0

Each file holds a randomly initialised and then perturbed ``TransformerWrapper`` state dict
(dim 64, depth 2, heads 2 of width 32, 64 tokens, rotary), a token sequence and the logits that
release computes for it.
"""

import sys

import torch

sys.path.insert(0, sys.argv[1])
from x_transformers import Decoder, TransformerWrapper  # noqa: E402

torch.manual_seed(0)
model = TransformerWrapper(num_tokens=64, max_seq_len=40, attn_layers=Decoder(
    dim=64, depth=2, heads=2, attn_dim_head=32, rotary_pos_emb=True)).eval()
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))  # gammas/biases away from their initial values
tokens = torch.randint(0, 64, (1, 40))
with torch.no_grad():
    logits = model(tokens)
torch.save({"state_dict": model.state_dict(), "tokens": tokens, "logits": logits,
            "version": sys.argv[2]}, f"tests/data/xtransformers/xt_{sys.argv[2]}.pt")
