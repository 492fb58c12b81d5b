"""Child networks: architecture values in, ``torch.nn.Module`` out."""

from nasps.children.conv import ConvNet, build_conv_net
from nasps.children.rnn import CellLanguageModel, TreeCell

__all__ = ["CellLanguageModel", "ConvNet", "TreeCell", "build_conv_net"]
