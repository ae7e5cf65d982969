"""The model stage: load a spec or a .pt2 program, trace it (torch.fx, torch.export), the layer graph."""
