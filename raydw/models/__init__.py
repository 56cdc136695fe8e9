"""Models: catalog (torch-free), architectures, pre-trained weights."""
