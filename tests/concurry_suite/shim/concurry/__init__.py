"""``import concurry`` in any process of the suite (worker processes included, through
PYTHONPATH) loads the alias of ``stateful_pool.concurry`` (see ``alias.py``)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import alias

alias.install()
del sys.modules[__name__]
sys.modules[__name__] = __import__(__name__)
