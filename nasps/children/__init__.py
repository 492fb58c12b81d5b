"""Child networks: architecture values in, ``torch.nn.Module`` out."""

from nasps.children.conv import ConvNet, build_conv_net

__all__ = ["ConvNet", "build_conv_net"]
