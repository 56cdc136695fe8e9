"""Data: catalog (torch-free), readers, splits and fractions, device-resident batches."""
