"""Data the stages hand over: warp shards (writer and reader), audio features, batches."""
