#!/usr/bin/env bash
# Installs the optional PETSc stack (sparsediff[petsc]): Open MPI, OpenBLAS,
# MUMPS and ScaLAPACK from Debian's packages, then PETSc, petsc4py and mpi4py
# built from source by pip (they have no binary wheels for this platform).
#
# Order matters:
#   * OpenBLAS first, or PETSc's configure stops with "Could not find a
#     functional BLAS"; with `mpicc` on the PATH the build uses MPI.
#   * `petsc` on its own first, then `petsc4py` without build isolation, so
#     pip does not build PETSc a second time inside petsc4py's isolated build
#     environment. pip's wheel cache serves both on later runs.
#   * configure cannot download anything here, so MUMPS (the parallel direct
#     solver) comes from Debian's libmumps-dev and is named to configure.
#
# Usage: bash scripts/install-petsc.sh   (as root, or with the Debian packages present)
set -euo pipefail

# exact versions, so that pip's wheel cache serves every later install
PETSC_VERSION="${PETSC_VERSION:-3.24.6}"
MPI4PY_VERSION="${MPI4PY_VERSION:-4.1.2}"

if python -c "import petsc4py, mpi4py" 2>/dev/null; then
    python -c "import petsc4py; print('petsc4py', petsc4py.__version__, 'already installed')"
    exit 0
fi

if ! command -v mpicc >/dev/null || [ ! -e /usr/include/dmumps_c.h ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq libopenblas-dev libopenmpi-dev openmpi-bin \
            libmumps-dev libscalapack-openmpi-dev
    else
        echo "install-petsc: needs Open MPI, OpenBLAS, MUMPS and ScaLAPACK" \
             "(Debian: libopenblas-dev libopenmpi-dev openmpi-bin libmumps-dev" \
             "libscalapack-openmpi-dev); run as root or install them first" >&2
        exit 1
    fi
fi

mumps_libs="-ldmumps -lzmumps -lsmumps -lcmumps -lmumps_common -lpord"
export PETSC_CONFIGURE_OPTIONS="--with-mumps-include=/usr/include \
--with-mumps-lib=[${mumps_libs// /,}] \
--with-scalapack-lib=-lscalapack-openmpi \
--with-debugging=0 ${PETSC_CONFIGURE_OPTIONS:-}"

python -m pip install "petsc==${PETSC_VERSION}"
# without build isolation petsc4py's build requirements must be present
python -m pip install "cython>=3" setuptools wheel numpy
python -m pip install --no-build-isolation "petsc4py==${PETSC_VERSION}"
python -m pip install --no-binary mpi4py "mpi4py==${MPI4PY_VERSION}"
python -c "from petsc4py import PETSc; import mpi4py; print('PETSc', PETSc.Sys.getVersion(), 'mpi4py', mpi4py.__version__)"
