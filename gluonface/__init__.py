"""gluonface: face-recognition training on MXNet Gluon.

Importing the package has no side effects and does not import MXNet; subpackages import what they need.
"""
__version__ = "0.1.0"
