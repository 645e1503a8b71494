"""The site's side (NVIDIA FLARE Client API): train the experts the server sent.

The site keeps its full model (its router included) between rounds, writes the
received shared parameters and expert blocks into it strictly (``LAYOUT.merge``: a
name it lacks or a wrong shape is an error), trains with its router restricted to the
held experts, and sends back the shared parameters and its experts' blocks with the
per-expert feedback (usage counts and loss: the loss signal).
"""

from __future__ import annotations

import argparse
import math

import nvflare.client as flare
from flexmoe_flare.model import LAYOUT, initial_arrays, site_data, train
from nvflare.app_common.abstract.fl_model import FLModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-experts", type=int, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.02)
    args = ap.parse_args()

    flare.init()
    site = flare.get_site_name()  # "site-<n>"
    index = int(site.rsplit("-", 1)[1]) - 1
    data = site_data(index, num_experts=args.num_experts, dim=args.dim, n=args.samples,
                     seed=args.seed)
    state = initial_arrays(args.num_experts, args.dim, args.seed)  # the router stays here
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        held = [int(e) for e in received.meta["expert_ids"]]
        state = LAYOUT.merge(state, received.params)
        state, counts, loss = train(state, data, held, steps=args.steps, lr=args.lr)
        flare.send(FLModel(params=LAYOUT.select(state, held), meta={
            "num_examples": len(data.y),
            "feedback": {"experts": held, "counts": counts,
                         "loss": [None if math.isnan(v) else v for v in loss]},
            "received": sorted(received.params),
        }))


if __name__ == "__main__":
    main()
