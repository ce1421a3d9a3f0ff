"""gluonface: face-recognition training on MXNet Gluon (pack, align, train, launch, evaluate, export)."""
from setuptools import find_packages, setup

setup(
    name="gluonface",
    version="0.1.0",
    description="Face-recognition training on MXNet Gluon: datasets, alignment, margin losses, "
                "parameter-server and Horovod training, evaluation and export.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gluonface", "gluonface.*"]),
    package_data={"gluonface": ["py.typed"]},
    python_requires=">=3.8,<3.12",
    install_requires=[
        # GPU hosts install mxnet-cu117==1.9.1 (or mxnet-cu112) instead of mxnet: the one substitution.
        "mxnet==1.9.1",
        "numpy>=1.21,<1.24",
        "opencv-python-headless>=4.5",
        "tqdm",
        "PyYAML",
        "scipy",
        "matplotlib",
    ],
    extras_require={
        "zoo": ["gluoncv==0.10.5.post0"],
        "export": ["onnx>=1.14", "onnxruntime>=1.15"],
        "align": ["mtcnn==1.0.0", "joblib", "lz4"],
        "logs": ["tensorboardX"],
        "horovod": ["horovod==0.28.1"],
    },
    entry_points={"console_scripts": ["gluonface=gluonface.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
