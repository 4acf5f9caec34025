"""One process of tests/test_multiprocess.py: data-parallel training over two processes with two
CPU devices each, a checkpoint of the replicated state, and a resume from it.

    python tests/_multiprocess_worker.py PROCESS_ID PORT CHECKPOINT_DIR

Prints one JSON line of this process's findings.
"""

import json
import os
import sys


def main():
    pid, port, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"

    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)

    import numpy as np
    import optax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxprune as jp

    mesh = jp.training.data_mesh()
    model = jp.models.MLP(hidden=(8,))
    x, y = jp.data.paint("square", size=16)  # 256 rows: 4 steps of a global batch of 64
    rows = jp.training.process_slice(64)
    batches = jp.training.shard_batch(
        (x.reshape(4, 64, 2)[:, rows], y.reshape(4, 64, 1)[:, rows]), mesh, batch_axis=1
    )
    tx = optax.adam(1e-2)
    ts0 = jp.training.replicate(
        jp.training.train_state(model, tx, model.init(jax.random.key(0), x[:1])), mesh
    )
    epoch = jp.training.make_parallel_epoch(model, "mse", tx, mesh)
    key = jp.training.replicate(jax.random.key(1), mesh)

    ts1, _ = epoch(ts0, batches, key=key)
    ckpt = jp.training.Checkpoints(directory, "parallel-mlp")
    ckpt.save({"train": ts1, "key": key})
    ckpt.close()
    ts2, losses2 = epoch(ts1, batches, key=key)  # uninterrupted

    back = jp.training.Checkpoints(directory, "parallel-mlp").restore({"train": ts0, "key": key})
    resumed, losses_r = epoch(back["train"], batches, key=back["key"])

    def local(tree):
        """This process's shards of every leaf, as host arrays."""
        return [np.asarray(s.data) for a in jax.tree.leaves(tree) for s in a.addressable_shards]

    try:
        jp.training.Checkpoints(directory, "another-config").restore({"train": ts0, "key": key})
        refused = False
    except jp.training.CheckpointError:
        refused = True
    replicated = all(
        a.sharding.is_equivalent_to(NamedSharding(mesh, P()), a.ndim)
        for a in jax.tree.leaves(back["train"])
    )
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "global_leaves": sum(not a.is_fully_addressable for a in jax.tree.leaves(ts1)),
                "restored_equal": all(
                    np.array_equal(a, b)
                    for a, b in zip(local(back["train"]), local(ts1), strict=True)
                ),
                "restored_replicated": replicated,
                "resumed_equal": all(
                    np.array_equal(a, b) for a, b in zip(local(resumed), local(ts2), strict=True)
                )
                and np.array_equal(local(losses_r)[0], local(losses2)[0]),
                "other_fingerprint_refused": refused,
                "step": int(np.asarray(ts2.step.addressable_shards[0].data)),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
