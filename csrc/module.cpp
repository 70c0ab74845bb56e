// Entry point of oci_engine._C. The kernels live in their own files (isa_*.cpp, one per ISA path);
// dispatch.cpp exposes them.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace oci {
void register_kernels(py::module_& m);
void register_decoder_stack(py::module_& m);
}

PYBIND11_MODULE(_C, m) {
    m.doc() = "oci-engine CPU kernels";
    m.def("version", []() { return 1; });
    oci::register_kernels(m);
    oci::register_decoder_stack(m);
}
