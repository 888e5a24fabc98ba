"""VL data as Arrow/Parquet: an images table and an examples table per split."""
