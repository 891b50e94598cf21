#!/usr/bin/env bash
# Build the side environment in which imagecorruptions and Hendrycks's make_cifar_c.py run (NumPy 1.x), for
# bench_corruptions.py --side-python and fidelity_corruptions.py --side-python. Needs a C compiler and PyPI access;
# scikit-image 0.19.3 has no wheel for Python 3.11 and builds from source (about 10 minutes on 2 cores).
#
#   bash benchmarks/side_env.sh /tmp/cside            # -> /tmp/cside/venv/bin/python
#
# make_cifar_c.py itself (and its frost images) also needs Wand with ImageMagick's library, e.g. Debian's
# `apt-get install libmagickwand-dev`; put make_cifar_c.py and frost1.png .. frost6.jpg from
# github.com/hendrycks/robustness (ImageNet-C/create_c/) in a folder for --orig-dir. Never commit them.
set -euo pipefail
dir=${1:?usage: side_env.sh DIR}
python=${PYTHON:-python3.11}
"$python" -m venv "$dir/venv"
pip="$dir/venv/bin/pip"
"$pip" install -q numpy==1.26.4 scipy==1.11.4 "setuptools<81" pillow opencv-python-headless "cython<3" pythran wheel
"$pip" install -q --no-build-isolation scikit-image==0.19.3
"$pip" install -q --no-deps imagecorruptions  # its declared opencv-python is the headless build above
"$pip" install -q Wand || echo "Wand not installed: make_cifar_c.py will not run (imagecorruptions does)"
"$dir/venv/bin/python" -c "import imagecorruptions, skimage, numpy; print('side environment ready:', numpy.__version__, skimage.__version__)"
