"""SHARP: many models trained at once, their shards scheduled across the devices (torch only).

    scheduler  the shard-alternator schedule over tasks and devices
    runner     train_many: worker processes running the schedule's units
"""
