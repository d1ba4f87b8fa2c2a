"""Test setup: TensorFlow (input pipeline only) must not grab accelerators or threads."""

import os

os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
