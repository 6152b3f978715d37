"""Train SimpleModel on MNIST under DistributedDataParallel with a class ledger sharded across the processes,
then forget a class from the ledger with amnesiac.unlearn_sharded (collective: every process calls it). Run with:

    torchrun --nproc_per_node 2 examples/ddp_ledger.py --epochs 1

(gloo on CPUs; pass --backend nccl on GPUs, one process per GPU). Every process reads the same seeded order of
global batches and trains on its slice; each class's delta lives on one process.
"""

import argparse
import os

import amnesiac_paper
import torch
import torch.distributed as dist
import torch.nn.functional as F

import amnesiac


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128, help="global batch (split across the processes)")
    parser.add_argument("--subset", type=float, default=0.1, help="fraction of the MNIST training set")
    parser.add_argument("--forget", type=int, default=3, help="the class to forget after training")
    parser.add_argument("--alpha", type=float, default=0.03,
                        help="the scale of the subtracted class delta: a step size whose useful window moves with the "
                             "length of training (0.03 for the default 10%% subset and one epoch; the README's quick "
                             "start explains why alpha = 1 is far too much under Adam)")
    parser.add_argument("--backend", default="gloo")
    args = parser.parse_args()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if args.backend == "nccl" else "cpu"
    train_all = amnesiac_paper.load_dataset("mnist", "train")
    train = train_all.subset(amnesiac.random_ids(train_all, args.subset, seed=0))
    test = amnesiac_paper.load_dataset("mnist", "test")
    torch.manual_seed(0)
    model = amnesiac_paper.SimpleModel(1, 10).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    log = amnesiac.ShardedDeltaLog(model, amnesiac.groups_by_class(train))
    opt = amnesiac.AttributedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-3), model, log)
    amnesiac.attach_ddp(ddp, opt)
    loader = train.loader(args.batch, seed=0)
    for _ in range(args.epochs):
        for x, y, ids in loader:  # the same global batches on every process; each takes its slice
            part = slice(rank * len(ids) // world, (rank + 1) * len(ids) // world)
            opt.zero_grad()
            opt.set_batch(ids[part])
            F.cross_entropy(ddp(x[part].to(device)), y[part].to(device)).backward()
            opt.step()
    opt.close()
    request = amnesiac.Request(forget_groups=(amnesiac.class_group(args.forget),))
    forgot = amnesiac.unlearn_sharded(model, request, log=log, alpha=args.alpha)  # collective: every process calls
    if rank == 0:
        forgotten, rest = amnesiac.test_views(test, args.forget)
        print(f"{world} process(es); process 0 keeps {log.owned_groups()}; shares sent per step "
              f"{log.bytes_sent / max(1, log.steps_logged):,.0f} bytes")
        print(f"class {args.forget}: test accuracy {amnesiac.accuracy(model, forgotten):.3f} -> "
              f"{amnesiac.accuracy(forgot, forgotten):.3f}; rest {amnesiac.accuracy(model, rest):.3f} -> "
              f"{amnesiac.accuracy(forgot, rest):.3f} (alpha {args.alpha})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
