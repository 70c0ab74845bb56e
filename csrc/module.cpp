// Entry point of oci_engine._C. Kernel files register themselves through the functions declared
// in registry.h so that each kernel stays in its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
    m.doc() = "oci-engine CPU kernels";
    m.def("version", []() { return 1; });
}
