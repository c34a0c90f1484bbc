"""``python -m sensiformer.tests._fingerprint OUT.npz``: write this process's CPU path and its
fingerprint (``_support.fingerprint``) to OUT.npz, for the cross-path comparison."""

import sys

import numpy as np

import sensiformer as sf

from ._support import current_path, fingerprint

if __name__ == "__main__":
    sf.set_num_threads(1)
    np.savez(sys.argv[1], __path__=np.array(current_path()), **fingerprint())
