"""Statistics over results: buckets, metrics, thresholds, paired comparisons, flips. Plain data in and out."""
