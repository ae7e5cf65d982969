"""archscan: how much of a training image can an attacker rebuild from a model's shared gradients?"""
__version__ = "0.1.0"
