"""Build a pyradiomics wheel for frd-score from PyPI's last release, which does not install as it is.

pyradiomics 3.1.0 (May 2023) has wheels up to CPython 3.9 only, and its sdist lacks the C headers
``cmatrices.h`` and ``cshape.h`` and declares version 3.0.1a1 (pyradiomics issues #932, #933, #954).
This fetches that sdist from PyPI, checks its sha256, adds the two headers (prototypes of the sdist's
own C files, in ``third_party/pyradiomics``) and builds a wheel:

    python tools/build_pyradiomics.py OUT_DIR    # prints the wheel's path
"""
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

URL = ("https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/"
       "pyradiomics-3.1.0.tar.gz")
SHA256 = "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
HEADERS = Path(__file__).resolve().parent.parent / "third_party" / "pyradiomics"


def main(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cxr-pyradiomics-") as tmp:
        sdist = Path(tmp) / "pyradiomics-3.1.0.tar.gz"
        with urllib.request.urlopen(URL, timeout=120) as r, open(sdist, "wb") as f:
            shutil.copyfileobj(r, f)
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SHA256:
            sys.exit(f"{URL}: sha256 {digest}; expected {SHA256}")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        source = Path(tmp) / "pyradiomics-3.1.0"
        for header in HEADERS.glob("*.h"):
            shutil.copy(header, source / "radiomics" / "src" / header.name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
                       check=True)
    return next(out.glob("pyradiomics-*.whl"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/build_pyradiomics.py OUT_DIR")
    print(main(Path(sys.argv[1])))
