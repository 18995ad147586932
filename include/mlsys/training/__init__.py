"""train: the training engines (torch only) and the train and select stages around them.

    trainer     the single-process loop (the ``single`` strategy)
    stage       the train stage: TrainSpec, run (single, or ddp/pipeline through torchrun)
    selection   the select stage: a grid of configurations trained at once, the best kept
    parallel/   GPipe / 1F1B pipelines, DDP, checkpoints, the torchrun launcher and job
    spill/      Hydra-style spilling: models larger than a device, shard by shard
    sharp/      SHARP: many models' shards scheduled over the devices

The models themselves live in ``mlsys.model``; engines import torch alone.
Importing this package costs nothing: specs load without torch.
"""
