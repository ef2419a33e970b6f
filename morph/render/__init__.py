"""Frames from conditionings: batches through the pipeline, the frame store and its keys, the writer thread,
torchrun shards."""
