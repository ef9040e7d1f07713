"""What every long job shares: progress (bytes, rate, ETA, phase) and its JSON/text report."""
