"""What this machine's packages provide beyond the library: the named image sets built
from Debian and PyPI packages (``qretrain.assets.pools``) and the Fashion-MNIST
reference teachers.

Nothing here is imported by ``import qretrain`` or ``import qretrain.data``: the
dataset registry imports a pool's module the first time a spec it may name is loaded
(``qretrain.data.registry.register_provider``), and the model registry the teachers
on the first ``teacher:`` spec. The modules sit above ``qretrain.data`` and
``qretrain.models`` and use only their public readers.
"""
